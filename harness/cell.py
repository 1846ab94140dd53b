"""Cells: the unit of work.  One cell = one environment x platform x profile x variant.

A :class:`Cell` is a frozen value compiled purely from a manifest (and a matrix
file).  Everything downstream (solve, install, build, test, report) reads it
and nothing else, so two equal cells always do the same work.

The *pure* variant key hashes what the cell alone decides (DESIGN invariant 1);
solving adds the resolved build/host packages to form the full key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.frozen import FrozenDict, thaw
from harness.frozen import canonical_json as canonical_json  # re-exported
from harness.frozen import digest as digest  # re-exported
from harness.specs import Dep, variant_spec

ROLES = ("build", "host", "run")
GPU_POLICIES = ("required", "optional", "none")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def is_compiler_key(key: str) -> bool:
    """``c_compiler``, ``cxx_compiler_version``...: variant keys that name no package."""
    return key.endswith(("_compiler", "_compiler_version"))


def check_id(text: str) -> str | None:
    """``None`` if ``text`` is safe as a single directory name, else why not."""
    if not text:
        return "an id cannot be empty"
    if text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        return f"{text!r} could escape its directory"
    if len(text) > 120:
        return f"{text[:20]!r}... is longer than 120 characters"
    if not _SAFE_ID.match(text):
        return f"{text!r} may only use letters, digits and . _ + - (and not start with a symbol)"
    return None




@dataclass(frozen=True)
class PackageBuild:
    """The package a cell builds: identity, backend and its merged configuration."""

    name: str
    version: str
    source_dir: Path
    backend: str
    backend_version: str = "*"
    backend_channels: tuple[str, ...] = ()
    config: FrozenDict[str, Any] = field(default_factory=FrozenDict)
    build_deps: tuple[Dep, ...] = ()
    host_deps: tuple[Dep, ...] = ()
    run_deps: tuple[Dep, ...] = ()

    def key_material(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.backend,
            "backend_version": self.backend_version,
            "config": thaw(self.config),
        }


@dataclass(frozen=True)
class Cell:
    """Everything one cell resolved to.  ``provenance`` says where each value came from."""

    id: str
    manifest: Path
    environment: str
    platform: str  # conda subdir: linux-64, osx-arm64, ...
    profile: str
    profile_base: str  # "dev" or "release": the root of the profile's inheritance
    variant: FrozenDict[str, str]
    dependencies: tuple[Dep, ...]  # the environment's own (test/run) dependencies
    pypi_dependencies: FrozenDict[str, Any]
    virtual_packages: tuple[str, ...]  # "__cuda=13", "__glibc=2.28", ...
    channels: tuple[str, ...]  # as written: names, URLs, file:// URLs, relative paths
    activation_env: FrozenDict[str, str]
    test_command: str | None
    gpu: str  # required | optional | none
    cuda: str | None  # declared CUDA requirement ("13"), None when the cell needs no GPU
    tags: tuple[str, ...]
    package: PackageBuild | None
    matrix: Path | None = None
    axes: FrozenDict[str, str] = field(default_factory=FrozenDict)
    platform_name: str = ""  # the manifest's (possibly rich) platform name
    solve_strategy: str = "highest"
    channel_priority: str = "strict"  # strict | disabled
    exclude_newer: str | None = None  # pixi's cutoff as written: a time, a date or a duration
    exclude_newer_packages: FrozenDict[str, str] = field(default_factory=FrozenDict)
    runners: tuple[str, ...] = ()
    provenance: FrozenDict[str, str] = field(default_factory=FrozenDict, compare=False)

    # -- derived -------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The directory relative paths (channels, sources) are resolved against."""
        return self.manifest.parent

    def variant_pins(self) -> list[str]:
        """The variant assignment as MatchSpecs, fed to every solve of this cell."""
        pins = []
        for name, value in sorted(self.variant.items()):
            if is_compiler_key(name):
                continue  # not a package: it chose the compiler package in the build dependencies
            spec = variant_spec(value)
            pins.append(name if spec == "*" else f"{name} {spec}")
        return pins

    def specs(self, role: str) -> list[str]:
        """MatchSpec strings of ``role`` (``build``/``host``/``run``), without source deps."""
        if role == "run":
            deps = self.dependencies + (self.package.run_deps if self.package else ())
        elif role == "host":
            deps = self.package.host_deps if self.package else ()
        elif role == "build":
            deps = self.package.build_deps if self.package else ()
        else:
            raise ValueError(role)
        own = self.package.name if self.package else None
        return [d.matchspec() for d in deps if not d.is_source and d.name != own]

    def pure_key_material(self) -> dict[str, Any]:
        """Everything the cell alone decides that a build depends on (invariant 1)."""
        return {
            "package": self.package.key_material() if self.package else None,
            "variant": dict(sorted(self.variant.items())),
            "platform": self.platform,
            "virtual_packages": sorted(self.virtual_packages),
            "profile": self.profile,
        }

    @property
    def pure_key(self) -> str:
        return digest(self.pure_key_material())

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form used by ``harness list --json`` and reports."""
        return {
            "id": self.id,
            "manifest": str(self.manifest),
            "matrix": str(self.matrix) if self.matrix else None,
            "environment": self.environment,
            "axes": dict(self.axes),
            "platform": self.platform,
            "platform_name": self.platform_name or self.platform,
            "profile": self.profile,
            "profile_base": self.profile_base,
            "variant": dict(self.variant),
            "virtual_packages": list(self.virtual_packages),
            "channels": list(self.channels),
            "dependencies": [d.describe() for d in self.dependencies],
            "pypi_dependencies": thaw(self.pypi_dependencies),
            "activation_env": dict(self.activation_env),
            "test_command": self.test_command,
            "gpu": self.gpu,
            "cuda": self.cuda,
            "tags": list(self.tags),
            "runners": list(self.runners),
            "solve_strategy": self.solve_strategy,
            "channel_priority": self.channel_priority,
            "exclude_newer": self.exclude_newer,
            "exclude_newer_packages": dict(self.exclude_newer_packages),
            "package": None
            if self.package is None
            else {
                **self.package.key_material(),
                "source_dir": str(self.package.source_dir),
                "backend_channels": list(self.package.backend_channels),
                "build": [d.describe() for d in self.package.build_deps],
                "host": [d.describe() for d in self.package.host_deps],
                "run": [d.describe() for d in self.package.run_deps],
            },
            "pure_key": self.pure_key,
        }
