"""Manifest environments (plus matrix overrides) -> :class:`~harness.cell.Cell` values.

Pure: reads only the manifest model, never solves or writes.  The matrix module
feeds an :class:`Overrides` per cell; a manifest without a matrix yields one
cell per environment.
"""

from __future__ import annotations

import dataclasses
import platform as _platform
import shlex
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
from harness.manifest.tasks import TaskElsewhere, render_chain, task_chain
from harness.manifest.variants import (
    VariantChoice,
    choices,
    compiler_keys,
    package_compilers,
    used_keys,
    variant_label,
    variant_space,
)
from harness.specs import Dep, package_name_problem, variant_spec
from harness.tomlfile import resolve_path

DEFAULT_TEST_COMMAND = "python -m pytest"
# The compiler packages pixi's backends pick when the variant names a version but no compiler.
DEFAULT_COMPILER_PACKAGES = {
    ("c", "linux"): "gcc", ("cxx", "linux"): "gxx", ("c", "osx"): "clang", ("cxx", "osx"): "clangxx",
    ("c", "win"): "vs2022", ("cxx", "win"): "vs2022", ("fortran", "linux"): "gfortran",
    ("fortran", "osx"): "gfortran", ("rust", "linux"): "rust", ("rust", "osx"): "rust", ("rust", "win"): "rust",
    ("cuda", "linux"): "cuda-nvcc", ("cuda", "win"): "cuda-nvcc",
}


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


def _names_package(manifest: Manifest, deps: tuple[Dep, ...]) -> bool:
    pkg = manifest.package
    if pkg is None:
        return False
    return any(d.is_source and (d.name == pkg.name or d.source in ("path:.", "path:./")) for d in deps)


def _uses_package(manifest: Manifest, resolved: ResolvedEnvironment) -> bool:
    return _names_package(manifest, resolved.dependencies)


def _test_command(
    manifest: Manifest, resolved: ResolvedEnvironment, platform: PlatformDecl
) -> tuple[str, str]:
    """The environment's ``test`` task as one command, run the pixi way (see :mod:`.tasks`)."""
    if "test" not in resolved.tasks:
        return DEFAULT_TEST_COMMAND, "default"
    subdir = platform.subdir
    context = {"pixi": {
        "platform": platform.name,
        "environment": {"name": resolved.name},
        "manifest_path": str(manifest.path),
        "is_win": subdir.startswith("win-"),
        "is_unix": not subdir.startswith("win-"),
        "is_linux": subdir.startswith("linux-"),
        "is_osx": subdir.startswith("osx-"),
    }}

    def elsewhere(task: str) -> list[str]:
        return [f"'{f.name}'" for f in manifest.features.values() if f.name not in resolved.features
                and any(task in t.tasks for t in (f.common, *(t for _, t in f.targets)))]

    try:
        steps = task_chain(resolved.tasks, "test", context, manifest.error, elsewhere)
    except TaskElsewhere as exc:
        # The manifest is valid for pixi; only running this cell's tests cannot work.
        # The cell still lists, solves and builds, and its test stage fails saying why.
        message = exc.message.replace("'", "")
        # The comment keeps extra arguments (appended as "$@") away from `exit`.
        return f"echo {shlex.quote(f'harness: {message}')} >&2; exit 2 #", "tasks.test (cannot run in one cell)"
    command = render_chain(steps)
    if command is None:
        raise manifest.error(
            "the test task runs no command: it and the tasks it depends on have no `cmd`",
            "tasks", "test", hint='write test = "python -m pytest" or give a task it depends on a `cmd`',
        )
    chain = " -> ".join(s.name for s in steps)
    return command, "tasks.test" if len(steps) == 1 else f"tasks.test (runs {chain})"


def task_env(manifest: Manifest, env: EnvironmentDecl, platform: PlatformDecl) -> dict[str, str]:
    """The variables pixi sets for every task (``$PIXI_PROJECT_ROOT``...): commands and
    activation variables of real manifests use them."""
    platforms = environment_platforms(manifest, env) or (platform,)
    return {
        "PIXI_PROJECT_ROOT": str(manifest.root),
        "PIXI_PROJECT_NAME": manifest.name or manifest.root.name,
        "PIXI_PROJECT_MANIFEST": str(manifest.path),
        "PIXI_PROJECT_VERSION": manifest.version or "NO_VERSION_SPECIFIED",
        "PIXI_ENVIRONMENT_NAME": env.name,
        "PIXI_ENVIRONMENT_PLATFORMS": ",".join(p.name for p in platforms),
        "PIXI_IN_SHELL": "1",
        "CONDA_DEFAULT_ENV": f"{manifest.name or manifest.root.name}:{env.name}",
    }


def compile_cell(manifest: Manifest, env: EnvironmentDecl, overrides: Overrides = Overrides()) -> Cell:
    """The one cell of ``env`` with ``overrides``; an environment that expands into several
    cells (open build variants) is an error here: use :func:`compile_cells`."""
    cells = compile_cells(manifest, env, overrides)
    if len(cells) > 1:
        raise CellError(
            f"environment '{env.name}' expands into {len(cells)} cells ({', '.join(c.id for c in cells)})",
            file=overrides.matrix or manifest.path, key=["environments", env.name],
            hint="pin the open build variants in the environment, or take every cell",
        )
    return cells[0]


def _check_cell_id(cell_id: str, manifest: Manifest, env: EnvironmentDecl, overrides: Overrides) -> None:
    problem = check_id(cell_id)
    if problem:
        raise CellError(f"cell id {problem}", file=overrides.matrix or manifest.path,
                        key=["name"] if overrides.matrix else ["environments", env.name],
                        hint="ids become directory names: use letters, digits, '.', '_', '+' and '-'")


def expanded_id(base: str | None, choice: VariantChoice) -> str:
    """``base`` plus one label per open variant key; ``None`` (the default environment) adds none."""
    labels = [variant_label(k, choice.assignment[k]) for k in choice.open_keys]
    return "-".join([*([base] if base else []), *labels]) or (base or "default")


def _compiler_deps(compilers: set[str], variant: Mapping[str, str], platform: PlatformDecl) -> tuple[Dep, ...]:
    """Build dependencies for the compilers whose variant keys the cell assigns, as pixi's
    backends add them: ``{c_compiler}_{target_platform} {c_compiler_version}``."""
    deps = []
    for lang in sorted(compilers):
        name, version = variant.get(f"{lang}_compiler"), variant.get(f"{lang}_compiler_version")
        if name is None and version is None:
            continue
        name = name or DEFAULT_COMPILER_PACKAGES.get((lang, platform.subdir.split("-")[0]), lang)
        deps.append(Dep(name=f"{name}_{platform.subdir}", version=variant_spec(version) if version else "*"))
    return tuple(deps)


def compile_cells(manifest: Manifest, env: EnvironmentDecl, overrides: Overrides = Overrides()) -> tuple[Cell, ...]:
    """The cells of ``env`` of ``manifest`` with matrix ``overrides`` applied: one, or one per
    allowed combination of the build-variant keys the environment leaves open."""
    cell_id = overrides.id or env.name
    _check_cell_id(cell_id, manifest, env, overrides)
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
    dependencies = resolved.dependencies
    if manifest.package is not None and _names_package(manifest, resolved.dev):
        # pixi's [dev]: the environment gets the package's dependencies, not the package.
        own = {d.name for d in dependencies}
        extra = [d for attr in ("build_deps", "host_deps", "run_deps")
                 for d in _package_deps(manifest, attr, platform) if not d.is_source and d.name not in own]
        dependencies = (*dependencies, *dict.fromkeys(extra))
        for d in extra:
            provenance.setdefault(f"dependencies.{d.name}", "[dev] (the package's dependencies)")
    package = None
    found = [VariantChoice(FrozenDict(overrides.variant), FrozenDict(), ())]
    compilers: set[str] = set()
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
        found = choices(space, used_keys(manifest, space), specs, overrides.variant, where=where, manifest=manifest)
        compilers = package_compilers(manifest) if compiler_keys(package_compilers(manifest)) & set(space.values) else set()

    sysreq = dict(resolved.system_requirements)
    virtual = default_virtual_packages(platform, sysreq)
    cuda = sysreq.get("cuda")
    gpu = overrides.gpu or ("required" if cuda else "none")
    if overrides.test_command:
        test_command, test_source = overrides.test_command, "matrix"
    else:
        test_command, test_source = _test_command(manifest, resolved, platform)
    provenance["test_command"] = test_source
    tags = list(dict.fromkeys([
        *[part for part in cell_id.split("-") if part],
        *overrides.tags,
        profile,
        "gpu" if cuda and gpu == "required" else "cpu",
        *(["gpu-optional"] if cuda and gpu == "optional" else []),
    ]))
    # A channel-pinned dependency's channel takes part in the solve, after the environment's.
    channels = tuple(dict.fromkeys([
        *resolved.channels,
        *(d.channel for d in resolved.dependencies if d.channel and not d.channel.startswith(("path:", "url:"))),
    ]))
    # pixi's task variables first, so that the manifest's own activation may refer to them.
    activation = FrozenDict({**task_env(manifest, env, platform), **resolved.activation_env})
    base = overrides.id or (None if env.name == "default" else env.name)
    cells: list[Cell] = []
    for choice in found:
        this_id = cell_id if not choice.open_keys else expanded_id(base, choice)
        if choice.open_keys:
            _check_cell_id(this_id, manifest, env, overrides)
        this_package = package
        if package is not None and compilers:
            extra = _compiler_deps(compilers, choice.assignment, platform)
            if extra:
                this_package = dataclasses.replace(package, build_deps=(*package.build_deps, *extra))
        cells.append(Cell(
            id=this_id,
            manifest=manifest.path,
            environment=env.name,
            platform=platform.subdir,
            profile=profile,
            profile_base=profile_base(manifest.profiles, profile),
            variant=FrozenDict(dict(sorted(choice.assignment.items()))),
            dependencies=tuple(dependencies),
            pypi_dependencies=resolved.pypi_dependencies,
            virtual_packages=virtual,
            channels=channels,
            activation_env=activation,
            test_command=test_command,
            gpu=gpu,
            cuda=cuda,
            tags=tuple(dict.fromkeys([*tags, *this_id.split("-")])),
            package=this_package,
            matrix=overrides.matrix,
            axes=overrides.axes,
            platform_name=platform.name,
            solve_strategy=resolved.solve_strategy,
            channel_priority=resolved.channel_priority,
            exclude_newer=manifest.exclude_newer,
            exclude_newer_packages=manifest.exclude_newer_packages,
            runners=overrides.runners,
            provenance=freeze({**provenance, **choice.provenance}),
        ))
    return tuple(cells)


@dataclass(frozen=True)
class Compiled:
    """The cells of one source (manifest or matrix), plus what was left out and why."""

    cells: tuple[Cell, ...]
    warnings: tuple[str, ...] = ()
    source: Path | None = None
    extra: FrozenDict[str, Any] = FrozenDict()


def compile_manifest(manifest: Manifest, *, platform: str | None = None) -> Compiled:
    """A manifest without a matrix: the cells of each environment.

    The implicit ``default`` environment (not declared under ``[environments]``)
    is a cell only when the manifest declares no other environment; a declared
    ``default`` is a cell like any other.  An environment whose features share
    no platform is left out with a warning (pixi accepts it, and installs nothing
    for it).  Ids are unique across the manifest: a clash names both sources.
    """
    warnings: list[str] = list(manifest.warnings)
    if manifest.platforms:
        warnings += _variant_warnings(manifest, manifest.platforms[0])
    cells: list[Cell] = []
    declared = [e for e in manifest.environments.values() if not e.implicit]
    origin: dict[str, tuple[str, Cell]] = {}
    for env in manifest.environments.values():
        if env.implicit and declared:
            continue
        if manifest.platforms and not environment_platforms(manifest, env) and platform is None:
            warnings.append(
                f"{manifest.path}: environment '{env.name}' is not a cell: its features' platforms "
                "do not intersect, so it supports no platform"
            )
            continue
        for cell in compile_cells(manifest, env, Overrides(platform=platform)):
            folded = cell.id.casefold()
            if folded in origin:
                _, other = origin[folded]
                raise CellError(
                    f"two cells get the id '{cell.id}': {_describe_source(other)} and {_describe_source(cell)}",
                    file=manifest.path, key=["environments", env.name],
                    line=manifest.line_of("environments", env.name),
                    hint="rename the environment, or pin the variant in one of them",
                )
            origin[folded] = (env.name, cell)
            cells.append(cell)
    return Compiled(tuple(cells), tuple(dict.fromkeys(warnings)), manifest.path)


def _describe_source(cell: Cell) -> str:
    """``environment 'default' (python=3.10.*)``: where a cell id came from."""
    variant = ", ".join(f"{k}={v}" for k, v in cell.variant.items())
    return f"environment '{cell.environment}'" + (f" ({variant})" if variant else "")


def _variant_warnings(manifest: Manifest, platform: PlatformDecl) -> list[str]:
    from harness.manifest.variants import unused_variant_warnings

    return unused_variant_warnings(manifest, variant_space(manifest, platform))
