"""Matrix -> combinations -> cells.

Count rule (proved by a property test): cells = product of axes (zipped axes
count once) - excluded combinations + included new ones, times profiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from harness.build.expand import ENV_HINT, env_name_problem, env_value_problem
from harness.compile import Compiled, Overrides, compile_cells
from harness.errors import MatrixError
from harness.frozen import FrozenDict, thaw
from harness.manifest.read import load_manifest
from harness.matrix.model import Matrix
from harness.matrix.read import MAX_CELLS, substitute
from harness.specs import Dep, parse_dep, version_problem
from harness.tomlfile import locate


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
    # Counted before anything is built, includes as if each one were new, so a
    # huge product is refused at once instead of filling memory.
    most = (total + len(matrix.include)) * len(matrix.profiles)
    if most > MAX_CELLS:
        raise MatrixError(f"the matrix expands to up to {most} cells (limit {MAX_CELLS})",
                          file=matrix.path, key=["axes"], hint="use exclude, zip or fewer values")
    for parts in itertools.product(*units) if units else [()]:
        combo: dict[str, str] = {}
        for part in parts:
            combo.update(part)
        combos.append(combo)
    order = [a.name for a in matrix.axes]
    combos = [{k: c[k] for k in order} for c in combos]
    excluded = Excludes(ex for ex in matrix.exclude if "profile" not in ex)
    kept = [c for c in combos if not excluded.match(c)]
    seen = {tuple(c.values()) for c in kept}
    for inc in matrix.include:
        combo = {k: inc[k] for k in order if k in inc}
        if tuple(combo.values()) not in seen:
            seen.add(tuple(combo.values()))
            kept.append(combo)
    return kept


class Excludes:
    """``exclude`` entries indexed by the axes they name: one set lookup per group, not a scan.

    A matrix may list thousands of entries; matching each combination against
    each entry would make ``harness list`` quadratic.
    """

    def __init__(self, patterns: Iterable[Mapping[str, str]]) -> None:
        self.groups: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
        for pattern in patterns:
            keys = tuple(sorted(k for k in pattern if k != "profile"))
            self.groups.setdefault(keys, set()).add(tuple(pattern[k] for k in keys))

    def match(self, combo: Mapping[str, str]) -> bool:
        return any(tuple(combo.get(k) for k in keys) in values for keys, values in self.groups.items())


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
                    raise _error(matrix, f"{where}: {dep}", ["axes", axis.name, kind, name])
                deps[kind].append(dep)
                provenance[f"{kind}.{name}"] = where
        for name, v in (mapping.get("system-requirements") or {}).items():
            if name != "archspec" and (problem := version_problem(str(v))):
                raise _error(matrix, f"{where}: {problem}", ["axes", axis.name, "system-requirements", name],
                             hint=f'write a version such as {name} = "{{value}}" with values like "12"')
            sysreq[name] = str(v)
            provenance[f"system-requirements.{name}"] = where
        for name, v in (mapping.get("variant") or {}).items():
            variant[name] = str(v)
        for name, v in (mapping.get("env") or {}).items():
            if problem := env_name_problem(name) or env_value_problem(str(v)):
                raise _error(matrix, f"{where}: {problem}", ["axes", axis.name, "env", name], hint=ENV_HINT)
            env[name] = str(v)
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


def _error(matrix: Matrix, message: str, key: list[str | int], *, hint: str | None = None) -> MatrixError:
    """An error at ``key`` of the matrix file, with the line it is written on."""
    return MatrixError(message, file=matrix.path, key=key,
                       line=locate(matrix.text, tuple(str(k) for k in key)), hint=hint)


def _template_for_new(matrix: Matrix, axis: str, raw: str) -> dict[str, Any]:
    """An ``include`` may bring a value the axis does not list: map it like the
    axis's first value, with the value substituted for ``{value}``."""
    template = matrix.axis_templates.get(axis)
    if template is not None:
        return substitute(thaw(template), raw)
    # A Matrix built without its templates: swap the first value's text for the new one.
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
    per_profile = {
        profile: Excludes(ex for ex in matrix.exclude if ex.get("profile") == profile)
        for profile in matrix.profiles
    }
    for combo in combinations(matrix):
        for i, profile in enumerate(matrix.profiles):
            if per_profile[profile].match(combo):
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
    seen: dict[str, tuple[str, dict[str, str]]] = {}
    overrides = list(iter_overrides(matrix))
    for ov in overrides:
        assert ov.id is not None
        folded = ov.id.casefold()  # one directory on case-insensitive file systems
        if folded in seen:
            other_id, other = seen[folded]
            ids = f"the id '{ov.id}'" if other_id == ov.id else f"the ids '{other_id}' and '{ov.id}' (equal but for case)"
            raise MatrixError(
                f"two cells get {ids}: {other} and {dict(ov.axes)}",
                file=matrix.path, key=["name"], line=locate(matrix.text, ("name",)),
                hint="put every axis that varies into the name template, or give values distinct labels",
            )
        seen[folded] = (ov.id, {**ov.axes, "profile": ov.profile or ""})
    cells = [cell for ov in overrides for cell in compile_cells(manifest, env, ov)]
    return Compiled(tuple(cells), manifest.warnings, matrix.path)
