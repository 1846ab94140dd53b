"""Matrix -> combinations -> cells.

Count rule (proved by a property test): cells = product of axes (zipped axes
count once) - excluded combinations + included new ones, times profiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from harness.compile import Compiled, Overrides, compile_cell
from harness.errors import MatrixError
from harness.frozen import FrozenDict
from harness.manifest.read import load_manifest
from harness.matrix.model import Matrix
from harness.specs import Dep, parse_dep


def combinations(matrix: Matrix) -> list[dict[str, str]]:
    """Axis value combinations after zip, exclude and include (without profiles)."""
    zipped = {name for group in matrix.zip for name in group}
    units: list[list[dict[str, str]]] = []
    for group in matrix.zip:
        axes = [matrix.axis(g) for g in group]
        units.append([
            {a.name: a.values[i].value for a in axes} for i in range(len(axes[0].values))
        ])
    for axis in matrix.axes:
        if axis.name not in zipped:
            units.append([{axis.name: v.value} for v in axis.values])
    combos: list[dict[str, str]] = []
    total = 1
    for unit in units:
        total *= len(unit)
    if total * len(matrix.profiles) > 100_000:
        raise MatrixError(f"the matrix expands to {total * len(matrix.profiles)} cells (limit 100000)",
                          file=matrix.path, key=["axes"], hint="use exclude, zip or fewer values")
    for parts in itertools.product(*units) if units else [()]:
        combo: dict[str, str] = {}
        for part in parts:
            combo.update(part)
        combos.append(combo)
    order = [a.name for a in matrix.axes]
    combos = [{k: c[k] for k in order} for c in combos]
    kept = [c for c in combos if not any(_matches(c, ex) for ex in matrix.exclude if "profile" not in ex)]
    for inc in matrix.include:
        combo = {k: inc[k] for k in order if k in inc}
        if combo not in kept:
            kept.append(combo)
    return kept


def _matches(combo: dict[str, str], pattern: FrozenDict[str, str]) -> bool:
    return all(combo.get(k) == v for k, v in pattern.items() if k != "profile")


def cell_id(matrix: Matrix, combo: dict[str, str], profile: str, first_profile: bool) -> str:
    """The id from the name template; profiles other than the first get a suffix
    unless the template places ``{profile}`` itself."""
    text = matrix.name
    for axis in matrix.axes:
        value = axis.find(combo[axis.name])
        label = value.label if value else combo[axis.name].replace(".", "")
        text = text.replace("{" + axis.name + "}", label)
    text = text.replace("{environment}", matrix.environment)
    if "{profile}" in matrix.name:
        text = text.replace("{profile}", profile)
    elif not first_profile:
        text = f"{text}-{profile}"
    return text


def overrides_for(matrix: Matrix, combo: dict[str, str], profile: str, first: bool) -> Overrides:
    deps: dict[str, list[Dep]] = {"dependencies": [], "host-dependencies": [], "build-dependencies": []}
    sysreq: dict[str, str] = {}
    variant: dict[str, str] = {}
    env: dict[str, str] = {}
    features: list[str] = []
    tags: list[str] = []
    gpu = matrix.gpu
    platform = matrix.platform
    provenance: dict[str, str] = {}
    for axis in matrix.axes:
        raw = combo[axis.name]
        value = axis.find(raw)
        mapping: dict[str, Any] = dict(value.mapping) if value else _template_for_new(matrix, axis.name, raw)
        where = f"axis {axis.name}={raw}"
        for kind in deps:
            for name, spec in (mapping.get(kind) or {}).items():
                dep = parse_dep(name, spec)
                if isinstance(dep, str):
                    raise MatrixError(dep, file=matrix.path, key=["axes", axis.name, kind, name])
                deps[kind].append(dep)
                provenance[f"{kind}.{name}"] = where
        for name, v in (mapping.get("system-requirements") or {}).items():
            sysreq[name] = str(v)
            provenance[f"system-requirements.{name}"] = where
        for name, v in (mapping.get("variant") or {}).items():
            variant[name] = str(v)
        env.update({k: str(v) for k, v in (mapping.get("env") or {}).items()})
        features += list(mapping.get("features") or ())
        tags += list(mapping.get("tags") or ())
        if mapping.get("gpu"):
            gpu = mapping["gpu"]
        if mapping.get("platform"):
            platform = mapping["platform"]
    cid = cell_id(matrix, combo, profile, first)
    runners: tuple[str, ...] = ()
    # Only a cell that requires a driver goes to GPU runners; ``optional`` runs anywhere.
    needs_gpu = bool(sysreq.get("cuda")) and gpu == "required"
    if matrix.runners:
        runners = matrix.runners.get("gpu" if needs_gpu else "default", matrix.runners.get("default", ()))
    return Overrides(
        id=cid,
        features=tuple(dict.fromkeys(features)),
        dependencies=tuple(deps["dependencies"]),
        host_dependencies=tuple(deps["host-dependencies"]),
        build_dependencies=tuple(deps["build-dependencies"]),
        system_requirements=FrozenDict(sysreq),
        variant=FrozenDict(variant),
        env=FrozenDict(env),
        profile=profile,
        test_command=matrix.test,
        gpu=gpu,
        platform=platform,
        axes=FrozenDict(combo),
        tags=tuple(tags),
        runners=runners,
        build_package=True,
        matrix=matrix.path,
        provenance=FrozenDict(provenance),
    )


def _template_for_new(matrix: Matrix, axis: str, raw: str) -> dict[str, Any]:
    """An ``include`` may bring a value the axis does not list: map it like the
    axis's first value, with the value substituted."""
    first = matrix.axis(axis).values[0]

    def swap(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace(first.value, raw)
        if isinstance(v, (dict, FrozenDict)):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, tuple | list):
            return [swap(x) for x in v]
        return v

    return swap(dict(first.mapping))


def iter_overrides(matrix: Matrix) -> Iterator[Overrides]:
    for combo in combinations(matrix):
        for i, profile in enumerate(matrix.profiles):
            if any(ex.get("profile") == profile and _matches(combo, ex) for ex in matrix.exclude):
                continue
            yield overrides_for(matrix, combo, profile, i == 0)


def compile_matrix(matrix: Matrix) -> Compiled:
    """All cells of a matrix file.  Duplicate ids are an error naming both combinations."""
    manifest = load_manifest(matrix.manifest)
    if matrix.environment not in manifest.environments:
        raise MatrixError(
            f"environment '{matrix.environment}' is not defined in {manifest.path.name}",
            file=matrix.path, key=["environment"],
            hint="known environments: " + ", ".join(manifest.environments),
        )
    for profile in matrix.profiles:
        if profile not in manifest.profiles:
            raise MatrixError(f"unknown profile '{profile}'", file=matrix.path, key=["profiles"],
                              hint="known profiles: " + ", ".join(manifest.profiles))
    env = manifest.environments[matrix.environment]
    seen: dict[str, dict[str, str]] = {}
    overrides = list(iter_overrides(matrix))
    for ov in overrides:
        assert ov.id is not None
        if ov.id in seen:
            raise MatrixError(
                f"two cells get the id '{ov.id}': {dict(seen[ov.id])} and {dict(ov.axes)}",
                file=matrix.path, key=["name"],
                hint="put every axis that varies into the name template, or give values distinct labels",
            )
        seen[ov.id] = {**ov.axes, "profile": ov.profile or ""}
    cells = [compile_cell(manifest, env, ov) for ov in overrides]
    return Compiled(tuple(cells), manifest.warnings, matrix.path)
