"""Manifest environments (plus matrix overrides) -> :class:`~harness.cell.Cell` values.

Pure: reads only the manifest model, never solves or writes.  The matrix module
feeds an :class:`Overrides` per cell; a manifest without a matrix yields one
cell per environment.
"""

from __future__ import annotations

import dataclasses
import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cell import Cell, PackageBuild, check_id
from harness.errors import CellError
from harness.frozen import FrozenDict, freeze
from harness.manifest.merge import ResolvedEnvironment, environment_platforms, resolve_environment
from harness.manifest.model import EnvironmentDecl, Feature, Manifest, TargetTable
from harness.manifest.platforms import (
    PlatformDecl,
    default_virtual_packages,
    selector_matches,
    selector_specificity,
)
from harness.manifest.profiles import merged_config, profile_base
from harness.manifest.read import check_backend_config
from harness.manifest.variants import assign, used_keys, variant_space
from harness.specs import Dep, package_name_problem
from harness.tomlfile import resolve_path

DEFAULT_TEST_COMMAND = "python -m pytest"


def host_subdir() -> str:
    """The conda subdir of this machine."""
    system = {"Linux": "linux", "Darwin": "osx", "Windows": "win"}.get(_platform.system(), "linux")
    machine = _platform.machine().lower()
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "arm64" if system == "osx" else "aarch64"}.get(machine, "64")
    return f"{system}-{arch}"


@dataclass(frozen=True)
class Overrides:
    """What a matrix cell adds on top of its base environment."""

    id: str | None = None
    features: tuple[str, ...] = ()
    dependencies: tuple[Dep, ...] = ()
    host_dependencies: tuple[Dep, ...] = ()
    build_dependencies: tuple[Dep, ...] = ()
    system_requirements: FrozenDict[str, str] = FrozenDict()
    variant: FrozenDict[str, str] = FrozenDict()
    env: FrozenDict[str, str] = FrozenDict()
    profile: str | None = None
    test_command: str | None = None
    gpu: str | None = None
    platform: str | None = None
    axes: FrozenDict[str, str] = FrozenDict()
    tags: tuple[str, ...] = ()
    runners: tuple[str, ...] = ()
    build_package: bool | None = None
    matrix: Path | None = None
    provenance: FrozenDict[str, str] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        for name in ("system_requirements", "variant", "env", "axes", "provenance"):
            value = getattr(self, name)
            if not isinstance(value, FrozenDict):
                object.__setattr__(self, name, FrozenDict(value))


def pick_platform(manifest: Manifest, env: EnvironmentDecl, wanted: str | None) -> PlatformDecl:
    """The cell's platform: the one asked for, else the first one matching this machine,
    else the environment's first platform (a cell can be solved for any platform)."""
    platforms = environment_platforms(manifest, env)
    if not manifest.platforms:
        return PlatformDecl(host_subdir(), host_subdir())
    if wanted:
        for p in platforms:
            if wanted in (p.name, p.subdir):
                return p
        declared = ", ".join(p.name for p in platforms) or "none"
        raise CellError(
            f"environment '{env.name}' does not support platform '{wanted}' (it supports: {declared})",
            file=manifest.path, key=["workspace", "platforms"], line=manifest.line_of("workspace", "platforms"),
            hint="add the platform to [workspace] platforms or choose another",
        )
    if not platforms:
        raise CellError(
            f"environment '{env.name}' has no platform: its features' platforms do not intersect",
            file=manifest.path, key=["environments", env.name], line=manifest.line_of("environments", env.name),
            hint="check the `platforms` of the environment's features",
        )
    here = host_subdir()
    for p in platforms:
        if p.subdir == here:
            return p
    return platforms[0]


def _package_deps(manifest: Manifest, attr: str, platform: PlatformDecl) -> tuple[Dep, ...]:
    deps = getattr(manifest.package, attr)
    merged: dict[str, Dep] = {d.name: d for d in deps.common}
    targets = [(sel, ds) for sel, ds in deps.targets if selector_matches(sel, platform)]
    targets.sort(key=lambda item: selector_specificity(item[0], platform))
    for _, ds in targets:
        for d in ds:
            merged[d.name] = d
    return tuple(merged.values())


def _uses_package(manifest: Manifest, resolved: ResolvedEnvironment) -> bool:
    pkg = manifest.package
    if pkg is None:
        return False
    return any(d.is_source and (d.name == pkg.name or d.source in ("path:.", "path:./")) for d in resolved.dependencies)


def _test_command(manifest: Manifest, resolved: ResolvedEnvironment) -> tuple[str, str]:
    task = resolved.tasks.get("test")
    if task is None:
        return DEFAULT_TEST_COMMAND, "default"
    cmd = task.get("cmd") if isinstance(task, Mapping) else task
    if isinstance(cmd, str):
        return cmd, "tasks.test"
    if isinstance(cmd, tuple) and cmd and all(isinstance(part, str) for part in cmd):
        return " ".join(cmd), "tasks.test"
    if isinstance(task, Mapping) and "cmd" not in task:
        return DEFAULT_TEST_COMMAND, "default"  # a task that only depends on others
    raise manifest.error(
        "the test task's command must be a string or a non-empty list of strings",
        "tasks", "test", *(("cmd",) if isinstance(task, Mapping) else ()),
        hint='write test = "python -m pytest" or test = { cmd = "python -m pytest" }',
    )


def compile_cell(manifest: Manifest, env: EnvironmentDecl, overrides: Overrides = Overrides()) -> Cell:
    """One cell: ``env`` of ``manifest`` with matrix ``overrides`` applied."""
    cell_id = overrides.id or env.name
    problem = check_id(cell_id)
    if problem:
        raise CellError(f"cell id {problem}", file=overrides.matrix or manifest.path,
                        key=["name"] if overrides.matrix else ["environments", env.name],
                        hint="ids become directory names: use letters, digits, '.', '_', '+' and '-'")
    for f in overrides.features:
        if f not in manifest.features:
            raise CellError(f"feature '{f}' is not defined in {manifest.path.name}",
                            file=overrides.matrix, key=["axes"],
                            hint="known features: " + ", ".join(sorted(manifest.features)))
    features = dict(manifest.features)
    feature_names = list(overrides.features)
    if overrides.dependencies or overrides.system_requirements or overrides.env or overrides.host_dependencies or overrides.build_dependencies:
        axis_feature = Feature(
            name="matrix-axes",
            common=TargetTable(
                dependencies=overrides.dependencies,
                host_dependencies=overrides.host_dependencies,
                build_dependencies=overrides.build_dependencies,
                activation_env=overrides.env,
            ),
            system_requirements=overrides.system_requirements,
        )
        features["matrix-axes"] = axis_feature
        feature_names.insert(0, "matrix-axes")
    if feature_names:
        env = dataclasses.replace(env, features=tuple(dict.fromkeys([*feature_names, *env.features])))
        manifest = dataclasses.replace(manifest, features=FrozenDict(features))
    platform = pick_platform(manifest, env, overrides.platform)
    resolved = resolve_environment(manifest, env, platform)
    provenance: dict[str, str] = {k: v.replace("feature matrix-axes", "matrix axes") for k, v in resolved.provenance.items()}
    provenance.update(overrides.provenance)

    profile = overrides.profile or env.profile or "dev"
    if profile not in manifest.profiles:
        raise CellError(f"unknown profile '{profile}'", file=overrides.matrix or manifest.path, key=["profiles"],
                        hint="known profiles: " + ", ".join(sorted(manifest.profiles)))
    provenance["profile"] = ("matrix" if overrides.profile else f"environments.{env.name}.profile" if env.profile else "default (dev)")

    build_package = overrides.build_package if overrides.build_package is not None else _uses_package(manifest, resolved)
    package = None
    variant: dict[str, str] = {}
    if manifest.package is not None and build_package:
        pkg = manifest.package
        config, origin = merged_config(pkg, platform, manifest.profiles, profile)
        check_backend_config(
            pkg.backend, config,
            lambda msg, *k, hint=None: manifest.error(msg, "package", "build", "config", *k, hint=hint),
        )
        for k, label in origin.items():
            provenance[f"config.{k}"] = label
        extra_host = resolved.host_dependencies if "pixi-build" not in manifest.preview else ()
        extra_build = resolved.build_dependencies if "pixi-build" not in manifest.preview else ()
        name = pkg.name or manifest.name or manifest.root.name
        if problem := package_name_problem(name):
            where = ("package", "name") if pkg.name else ("workspace", "name") if manifest.name else ("package",)
            raise manifest.error(f"the package's name: {problem}", *where,
                                 hint='set a valid name in [package], e.g. name = "mypkg"')
        package = PackageBuild(
            name=name,
            version=pkg.version or manifest.version or "0.0.0",
            source_dir=resolve_path(manifest.root / pkg.source) if pkg.source else manifest.root,
            backend=pkg.backend,
            backend_version=pkg.backend_version,
            backend_channels=pkg.backend_channels,
            config=config,
            build_deps=(*_package_deps(manifest, "build_deps", platform), *overrides.build_dependencies, *extra_build),
            host_deps=(*_package_deps(manifest, "host_deps", platform), *overrides.host_dependencies, *extra_host),
            run_deps=_package_deps(manifest, "run_deps", platform),
        )
        space = variant_space(manifest, platform)
        specs: dict[str, list[str]] = {}
        for d in resolved.dependencies:
            if not d.is_source:
                specs.setdefault(d.name, []).append(d.version)
        where = f"cell '{cell_id}' (environment '{env.name}')" if overrides.id else f"environment '{env.name}'"
        variant, vprov = assign(space, used_keys(manifest, space), specs, overrides.variant, where=where, manifest=manifest)
        provenance.update(vprov)
    elif overrides.variant:
        variant = dict(overrides.variant)

    sysreq = dict(resolved.system_requirements)
    virtual = default_virtual_packages(platform, sysreq)
    cuda = sysreq.get("cuda")
    gpu = overrides.gpu or ("required" if cuda else "none")
    if overrides.test_command:
        test_command, test_source = overrides.test_command, "matrix"
    else:
        test_command, test_source = _test_command(manifest, resolved)
    provenance["test_command"] = test_source
    tags = list(dict.fromkeys([
        *[part for part in cell_id.split("-") if part],
        *overrides.tags,
        profile,
        "gpu" if cuda and gpu == "required" else "cpu",
        *(["gpu-optional"] if cuda and gpu == "optional" else []),
    ]))
    channels = resolved.channels
    return Cell(
        id=cell_id,
        manifest=manifest.path,
        environment=env.name,
        platform=platform.subdir,
        profile=profile,
        profile_base=profile_base(manifest.profiles, profile),
        variant=FrozenDict(dict(sorted(variant.items()))),
        dependencies=tuple(d for d in resolved.dependencies),
        pypi_dependencies=resolved.pypi_dependencies,
        virtual_packages=virtual,
        channels=channels,
        activation_env=resolved.activation_env,
        test_command=test_command,
        gpu=gpu,
        cuda=cuda,
        tags=tuple(tags),
        package=package,
        matrix=overrides.matrix,
        axes=overrides.axes,
        platform_name=platform.name,
        solve_strategy=resolved.solve_strategy,
        runners=overrides.runners,
        provenance=freeze(provenance),
    )


@dataclass(frozen=True)
class Compiled:
    """The cells of one source (manifest or matrix), plus what was left out and why."""

    cells: tuple[Cell, ...]
    warnings: tuple[str, ...] = ()
    source: Path | None = None
    extra: FrozenDict[str, Any] = FrozenDict()


def compile_manifest(manifest: Manifest, *, platform: str | None = None) -> Compiled:
    """A manifest without a matrix: one cell per environment.

    The implicit ``default`` environment of a manifest that declares others is
    left out (with a warning) when it cannot form a cell, e.g. because it leaves
    a build variant open; a declared environment that cannot is an error.
    """
    warnings: list[str] = list(manifest.warnings)
    if manifest.platforms:
        for p in manifest.platforms:
            warnings += _variant_warnings(manifest, p)
            break
    cells: list[Cell] = []
    declared = [e for e in manifest.environments.values() if not e.implicit]
    for env in manifest.environments.values():
        try:
            cells.append(compile_cell(manifest, env, Overrides(platform=platform)))
        except CellError as exc:
            if env.implicit and declared:
                warnings.append(f"the implicit default environment is not a cell: {exc.message}")
                continue
            raise
    return Compiled(tuple(cells), tuple(dict.fromkeys(warnings)), manifest.path)


def _variant_warnings(manifest: Manifest, platform: PlatformDecl) -> list[str]:
    from harness.manifest.variants import unused_variant_warnings

    return unused_variant_warnings(manifest, variant_space(manifest, platform))
