"""Coarser rows from finer ones: what the spool does to undelivered rows instead of dropping
them when it reaches its cap. Two consecutive rows become one row covering both intervals:
CPU-seconds and bytes add up, memory keeps its peak, rates are averaged over time, so the
run's totals and peaks stay exact and only the time resolution is lost."""

from __future__ import annotations

import math

from sentinel_sidecar.measure.rows import Fold, fold


def halve(header: bytes, rows: bytes) -> tuple[bytes, int]:
    """Every two consecutive rows of `rows` (whole CSV lines) as one; an odd last row stays
    as it is. The merged rows and how many there are."""
    folds = [fold(name) for name in header.decode().rstrip("\n").split(",")]
    lines = rows.decode().splitlines()
    merged: list[str] = []
    before: float | None = None  # timestamp of the row before the pair: where its interval starts
    for i in range(0, len(lines) - 1, 2):
        first, second = lines[i].split(","), lines[i + 1].split(",")
        start, middle, end = before, float(first[0]), float(second[0])
        # The first row's interval is unknown at the start of the rows: taken as long as the
        # second's (rows of one segment have one interval).
        weights = (middle - start if start is not None else end - middle, end - middle)
        cells = zip(folds, first, second, strict=False)
        merged.append(",".join(_fold(how, a, b, weights) for how, a, b in cells))
        before = end
    if len(lines) % 2:
        merged.append(lines[-1])
    return "".join(line + "\n" for line in merged).encode(), len(merged)


def _fold(how: Fold, a: str, b: str, weights: tuple[float, float]) -> str:
    if how is Fold.LAST:
        return b
    x, y = _value(a), _value(b)
    if how is Fold.SUM:
        if x is None or y is None:
            return ""  # one interval unknown: so is their total
        return _number(x + y, a, b)
    if x is None or y is None:
        return a if y is None and x is not None else b
    if how is Fold.MAX:
        return a if x >= y else b
    if how is Fold.MIN:
        return a if x <= y else b
    total = weights[0] + weights[1]
    mean = (x * weights[0] + y * weights[1]) / total if total > 0 else (x + y) / 2
    return _number(mean, a, b)


def _value(text: str) -> float | None:
    """The cell as a number; None when empty (unknown) or not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _number(value: float, a: str, b: str) -> str:
    """`value` written like its inputs: a whole number when both were, else with as many
    decimals as the longer of them."""
    digits = max(_decimals(a), _decimals(b))
    return f"{value:.{digits}f}" if digits else str(round(value))


def _decimals(text: str) -> int:
    point = text.find(".")
    return len(text) - point - 1 if point >= 0 else 0
