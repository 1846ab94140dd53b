"""The typed model of a pixi manifest.  Values only: reading lives in ``read``,
pixi's merge rules in ``merge``, profiles in ``profiles``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ManifestError
from harness.frozen import FrozenDict
from harness.manifest.platforms import PlatformDecl
from harness.specs import Dep

DEFAULT_FEATURE = "default"


@dataclass(frozen=True)
class ChannelRef:
    """A channel as written, with pixi's optional priority (higher sorts first)."""

    channel: str
    priority: int | None = None


@dataclass(frozen=True)
class TargetTable:
    """What one feature says for one target selector (or for all, selector ``""``)."""

    dependencies: tuple[Dep, ...] = ()
    host_dependencies: tuple[Dep, ...] = ()
    build_dependencies: tuple[Dep, ...] = ()
    constraints: tuple[Dep, ...] = ()
    pypi_dependencies: FrozenDict[str, Any] = FrozenDict()
    activation_env: FrozenDict[str, str] = FrozenDict()
    activation_scripts: tuple[str, ...] = ()
    tasks: FrozenDict[str, Any] = FrozenDict()
    dev: tuple[Dep, ...] = ()  # ``[dev]``: source packages whose dependencies the environment gets


@dataclass(frozen=True)
class Feature:
    """A pixi feature; the root-level tables form the feature ``default``."""

    name: str
    common: TargetTable = TargetTable()
    targets: tuple[tuple[str, TargetTable], ...] = ()
    channels: tuple[ChannelRef, ...] | None = None
    platforms: tuple[str, ...] | None = None
    system_requirements: FrozenDict[str, str] = FrozenDict()
    channel_priority: str | None = None
    solve_strategy: str | None = None


@dataclass(frozen=True)
class EnvironmentDecl:
    """An ``[environments]`` entry (list or table form), or the implicit default."""

    name: str
    features: tuple[str, ...] = ()
    no_default_feature: bool = False
    solve_group: str | None = None
    profile: str | None = None
    implicit: bool = False

    @property
    def all_features(self) -> tuple[str, ...]:
        """Feature names in merge order: listed features first, ``default`` last."""
        if self.no_default_feature or DEFAULT_FEATURE in self.features:
            return self.features
        return (*self.features, DEFAULT_FEATURE)


@dataclass(frozen=True)
class TargetedDeps:
    """Package dependencies of one kind: common ones plus per-selector tables."""

    common: tuple[Dep, ...] = ()
    targets: tuple[tuple[str, tuple[Dep, ...]], ...] = ()


@dataclass(frozen=True)
class PackageDecl:
    """``[package]``: what the harness builds per cell."""

    name: str | None
    version: str | None
    backend: str
    backend_version: str = "*"
    backend_channels: tuple[str, ...] = ()
    config: FrozenDict[str, Any] = FrozenDict()
    target_config: tuple[tuple[str, FrozenDict[str, Any]], ...] = ()
    source: str | None = None
    build_deps: TargetedDeps = TargetedDeps()
    host_deps: TargetedDeps = TargetedDeps()
    run_deps: TargetedDeps = TargetedDeps()

    def uses(self) -> set[str]:
        """Names this package depends on in any role and target."""
        names: set[str] = set()
        for deps in (self.build_deps, self.host_deps, self.run_deps):
            names.update(d.name for d in deps.common)
            for _, table in deps.targets:
                names.update(d.name for d in table)
        return names


@dataclass(frozen=True)
class Profile:
    """``[profiles.<name>]``; ``dev`` and ``release`` always exist."""

    name: str
    inherits: str | None = None
    backends: FrozenDict[str, FrozenDict[str, Any]] = FrozenDict()
    packages: FrozenDict[str, FrozenDict[str, Any]] = FrozenDict()


@dataclass(frozen=True)
class Manifest:
    """A whole pixi manifest (``pixi.toml`` or ``[tool.pixi]`` of ``pyproject.toml``)."""

    path: Path
    text: str = field(repr=False, compare=False)
    name: str | None
    version: str | None
    channels: tuple[ChannelRef, ...]
    platforms: tuple[PlatformDecl, ...]
    preview: tuple[str, ...]
    build_variants: FrozenDict[str, tuple[str, ...]]
    target_build_variants: tuple[tuple[str, FrozenDict[str, tuple[str, ...]]], ...]
    build_variants_files: tuple[Path, ...]
    features: FrozenDict[str, Feature]
    environments: FrozenDict[str, EnvironmentDecl]
    package: PackageDecl | None
    profiles: FrozenDict[str, Profile]
    tasks: FrozenDict[str, Any] = FrozenDict()
    solve_strategy: str = "highest"
    channel_priority: str = "strict"
    exclude_newer: str | None = None
    # ``[exclude-newer]`` / ``[pypi-exclude-newer]`` per package ("exclude-newer.tombi": "0d")
    exclude_newer_packages: FrozenDict[str, str] = FrozenDict()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    key_prefix: tuple[str, ...] = ()  # ("tool", "pixi") for pyproject.toml

    def error(self, message: str, *key: str, hint: str | None = None) -> ManifestError:
        """An error pointing at ``key`` of this manifest (with its line)."""
        full = (*self.key_prefix, *key)
        return ManifestError(message, file=self.path, key=list(full) or None,
                             line=self.line_of(*key) if key else None, hint=hint)

    @property
    def root(self) -> Path:
        return self.path.parent

    def platform(self, name: str) -> PlatformDecl:
        for p in self.platforms:
            if p.name == name:
                return p
        raise KeyError(name)

    def line_of(self, *key: str) -> int | None:
        from harness.tomlfile import locate

        return locate(self.text, (*self.key_prefix, *key))
