"""The run's identity as it is gathered: each field's value and where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict


class ContainerResources(TypedDict, total=False):
    """The workload container's `resources` as its pod spec sets them."""

    requests: dict[str, str]
    limits: dict[str, str]


def parse_resources(value: object) -> ContainerResources:
    """`requests` and `limits` of a container's `resources` object (a pod spec, run.json); what
    is not a mapping is left out."""
    found = ContainerResources()
    if not isinstance(value, Mapping):
        return found
    for key in ("requests", "limits"):
        amounts = value.get(key)
        if isinstance(amounts, Mapping) and amounts:
            found[key] = {str(name): str(amount) for name, amount in amounts.items()}
    return found


def amount(resources: ContainerResources, kind: str, name: str) -> str:
    """`resources[kind][name]` (`requests`, `cpu`), `-` where it is not set."""
    amounts: dict[str, str] = resources.get(kind) or {}  # type: ignore[assignment]
    return amounts.get(name, "-")


_SUFFIXES = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "k": 1e3 / 2**20,
             "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}  # fmt: skip


def cpu_cores(quantity: str | float) -> float:
    """A Kubernetes CPU quantity in cores (`250m`, `1.5`, `2`)."""
    text = str(quantity).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_mib(quantity: str | float) -> float:
    """A Kubernetes memory quantity in MiB (`768Mi`, `2Gi`, `1G`, bytes)."""
    text = str(quantity).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text) / 2**20


@dataclass(eq=False)
class Identity:
    """Field values and where each came from (`settings`, `pod`, `node`, `aws-imds`, ...)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    # The workload container's requests and limits (from its pod): `run.json`'s `resources`,
    # shown by `report` beside its recommendation; never sent to the API.
    resources: ContainerResources = field(default_factory=ContainerResources)

    def offer(self, source: str, values: Mapping[str, Any]) -> None:
        """Take each value that is set and not known yet: the first answer wins (for `tags`,
        key by key)."""
        for name, value in values.items():
            if value in (None, "", {}):
                continue
            if name not in self.values:
                self.values[name] = value
                self.sources[name] = source
            elif isinstance(value, dict) and isinstance(self.values[name], dict):
                self.values[name] = {**value, **self.values[name]}
                if self.sources[name] != source:
                    self.sources[name] = f"{self.sources[name]}+{source}"

    def record(self) -> dict[str, dict[str, Any]]:
        """`{"value": ..., "source": ...}` per field, for `run.json`: values stay data."""
        return {
            name: {"value": value, "source": self.sources[name]}
            for name, value in self.values.items()
        }

    def described(self) -> dict[str, str]:
        """`value (source)` per field, for the `identity` log line."""
        return {name: f"{self.values[name]} ({self.sources[name]})" for name in self.values}
