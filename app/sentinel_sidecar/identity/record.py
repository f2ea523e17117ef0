"""The run's identity as it is gathered: each field's value and where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Identity:
    """Field values and where each came from (`settings`, `pod`, `node`, `aws-imds`, ...)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

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
            if name != "container_resources"  # run.json keeps it apart, as `resources`
        }

    def described(self) -> dict[str, str]:
        """`value (source)` per field, for the `identity` log line."""
        return {name: f"{self.values[name]} ({self.sources[name]})" for name in self.values}
