"""The typed form of a matrix file (``matrices/*.toml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.frozen import FrozenDict

GPU_POLICIES = ("required", "optional", "none")
MAPPING_KEYS = (
    "dependencies",
    "host-dependencies",
    "build-dependencies",
    "system-requirements",
    "features",
    "variant",
    "env",
    "gpu",
    "tags",
    "platform",
)


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis, with the mapping that applies when a cell takes it."""

    value: str
    label: str
    mapping: FrozenDict[str, Any]


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]

    def find(self, value: str) -> AxisValue | None:
        for v in self.values:
            if v.value == value:
                return v
        return None


@dataclass(frozen=True)
class Matrix:
    """A matrix file: a manifest, axes, and how their product becomes cells."""

    path: Path
    text: str
    manifest: Path
    environment: str
    name: str
    axes: tuple[Axis, ...]
    zip: tuple[tuple[str, ...], ...]
    exclude: tuple[FrozenDict[str, str], ...]
    include: tuple[FrozenDict[str, str], ...]
    profiles: tuple[str, ...]
    test: str | None
    gpu: str | None
    platform: str | None
    runners: FrozenDict[str, tuple[str, ...]]
    description: str | None = None
    axis_templates: FrozenDict[str, FrozenDict[str, Any]] = FrozenDict()

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)
