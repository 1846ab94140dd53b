"""Build variants: the values a workspace offers, and the one value a cell takes.

Values come from ``build-variants-files`` (read by py-rattler-build's
``VariantConfig``, so ``zip_keys`` and ``if:`` selectors mean what rattler-build
says) and from ``[workspace.build-variants]`` / its target tables, which win.
A cell's assignment is explicit: per used key exactly one value must be allowed
by the cell's environment, otherwise the cell does not compile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rattler import Version, VersionSpec

from harness.errors import CellError, ManifestError
from harness.frozen import FrozenDict
from harness.manifest.model import Manifest
from harness.manifest.platforms import PlatformDecl, selector_matches, selector_specificity
from harness.specs import variant_spec


@dataclass(frozen=True)
class VariantSpace:
    """Per key its candidate values; zipped keys vary together (same index)."""

    values: FrozenDict[str, tuple[str, ...]]
    zip_keys: tuple[tuple[str, ...], ...]
    sources: FrozenDict[str, str]

    def groups(self, used: Iterable[str]) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
        """Used keys grouped as they vary: each group with its candidate rows."""
        used = [k for k in self.values if k in set(used)]
        out = []
        done: set[str] = set()
        for zipped in self.zip_keys:
            keys = tuple(k for k in zipped if k in used)
            if not keys:
                continue
            rows = list(dict.fromkeys(zip(*(self.values[k] for k in keys), strict=False)))
            out.append((keys, rows))
            done.update(keys)
        for k in used:
            if k not in done:
                out.append(((k,), [(v,) for v in self.values[k]]))
        return out


def read_variant_file(path: Path, platform: str) -> tuple[dict[str, tuple[str, ...]], list[list[str]]]:
    """One YAML variant file through rattler-build (``conda_build_config.yaml`` style too)."""
    from harness import inputs

    inputs.note(path)
    try:
        from rattler_build import JinjaConfig, PlatformConfig, VariantConfig

        jinja = JinjaConfig(platform=PlatformConfig(target_platform=platform))
        if path.name == "conda_build_config.yaml":
            config = VariantConfig.from_conda_build_config(str(path), jinja)
        else:
            config = VariantConfig.from_file_with_context(str(path), jinja)
    except Exception as exc:  # rattler-build raises its own exception types
        raise ManifestError(f"cannot read the variant file: {exc}", file=path,
                            hint="check the YAML (keys map to lists of values; zip_keys is a list of lists)") from None
    values = {k: tuple(str(v) for v in vs) for k, vs in config.to_dict().items()}
    return values, [list(z) for z in (config.zip_keys or [])]


def variant_space(manifest: Manifest, platform: PlatformDecl) -> VariantSpace:
    # Cached by the fields it reads: each cell of a matrix holds its own copy of the
    # manifest, and comparing whole manifests costs more than the space itself.
    return _variant_space(
        manifest.path, manifest.build_variants_files, manifest.build_variants,
        manifest.target_build_variants, platform,
    )


@lru_cache(maxsize=256)
def _variant_space(
    manifest_path: Path,
    build_variants_files: tuple[Path, ...],
    build_variants: Mapping[str, tuple[str, ...]],
    target_build_variants: tuple[tuple[str, Mapping[str, tuple[str, ...]]], ...],
    platform: PlatformDecl,
) -> VariantSpace:
    values: dict[str, tuple[str, ...]] = {}
    sources: dict[str, str] = {}
    zips: list[tuple[str, ...]] = []
    for path in build_variants_files:
        file_values, file_zips = read_variant_file(path, platform.subdir)
        for k, v in file_values.items():
            values[k] = v
            sources[k] = str(path.name)
        zips += [tuple(z) for z in file_zips]
    for k, v in build_variants.items():
        values[k] = v
        sources[k] = "workspace.build-variants"
    targets = [(sel, t) for sel, t in target_build_variants if selector_matches(sel, platform)]
    targets.sort(key=lambda item: selector_specificity(item[0], platform))
    for sel, table in targets:
        for k, v in table.items():
            values[k] = v
            sources[k] = f"workspace.target.{sel}.build-variants"
    for zipped in zips:
        lengths = {len(values.get(k, ())) for k in zipped}
        if len(lengths) > 1:
            raise ManifestError(
                f"zipped variant keys {', '.join(zipped)} have different numbers of values",
                file=manifest_path, key=["workspace", "build-variants-files"],
                hint="keys in one zip_keys group need the same number of values",
            )
    return VariantSpace(FrozenDict(values), tuple(zips), FrozenDict(sources))


def used_keys(manifest: Manifest, space: VariantSpace) -> set[str]:
    """Variant keys the package uses.  A recipe-based package may use any key."""
    if manifest.package is None:
        return set()
    if manifest.package.backend == "pixi-build-rattler-build":
        return set(space.values)
    return manifest.package.uses() & set(space.values)


_LITERAL = re.compile(r"\d+(?:\.\d+)*")


@lru_cache(maxsize=4096)
def compatible(value: str, spec: str) -> bool:
    """Can some version satisfy both the variant value and the environment's spec?"""
    a = variant_spec(value)
    b = spec.strip() or "*"
    if a == "*" or b == "*":
        return True
    try:
        sa, sb = VersionSpec(a, strict=False), VersionSpec(b, strict=False)
    except Exception:
        return a == b
    witnesses: list[str] = []
    for literal in _LITERAL.findall(a) + _LITERAL.findall(b):
        parts = literal.split(".")
        bumped = ".".join([*parts[:-1], str(int(parts[-1]) + 1)])
        witnesses += [literal, f"{literal}.0", f"{literal}.1", f"{literal}.0.1", f"{literal}.5", bumped]
    for w in witnesses:
        try:
            version = Version(w)
        except Exception:
            continue
        if sa.matches(version) and sb.matches(version):
            return True
    return False


def _row_allowed(
    keys: Sequence[str], row: Sequence[str], specs: Mapping[str, Sequence[str]], explicit: Mapping[str, str]
) -> bool:
    """Whether one combination of variant values satisfies the environment's specs and the axes."""
    for k, v in zip(keys, row, strict=True):
        if k in explicit:
            if variant_spec(explicit[k]) != variant_spec(v):
                return False
        elif not all(compatible(v, s) for s in specs.get(k, ())):
            return False
    return True


def assign(
    space: VariantSpace,
    used: Iterable[str],
    specs: Mapping[str, Sequence[str]],
    explicit: Mapping[str, str],
    *,
    where: str,
    manifest: Manifest,
) -> tuple[dict[str, str], dict[str, str]]:
    """Pick the one allowed value per used key.  Returns (assignment, provenance).

    ``specs`` are the environment's version specs per package name; ``explicit``
    values (from matrix axes) must be among the declared values.
    """
    assignment: dict[str, str] = {}
    provenance: dict[str, str] = {}
    for keys, rows in space.groups(used):
        allowed = [row for row in rows if _row_allowed(keys, row, specs, explicit)]
        label = ", ".join(keys)
        if not allowed:
            offered = "; ".join(", ".join(r) for r in rows)
            asked = "; ".join(
                f"{k} {explicit[k]} (matrix axis)" if k in explicit else f"{k} {' and '.join(specs.get(k, ('*',)))}"
                for k in keys
            )
            raise CellError(
                f"{where} allows no value of build variant {label}: it asks for {asked}, "
                f"the workspace offers {offered}",
                file=manifest.path, key=["workspace", "build-variants", keys[0]],
                line=manifest.line_of("workspace", "build-variants", keys[0]),
                hint=f"add a matching value to build-variants.{keys[0]} or change the environment's pin",
            )
        if len(allowed) > 1:
            raise CellError(
                f"{where} allows {len(allowed)} values of build variant {label} "
                f"({'; '.join(', '.join(r) for r in allowed)}): a cell needs exactly one",
                file=manifest.path, key=["workspace", "build-variants", keys[0]],
                line=manifest.line_of("workspace", "build-variants", keys[0]),
                hint=f'pin it in the environment, e.g. a feature with {keys[0]} = "{allowed[0][0]}"',
            )
        for k, v in zip(keys, allowed[0], strict=True):
            assignment[k] = v
            provenance[f"variant.{k}"] = (
                f"matrix axis ({explicit[k]})" if k in explicit
                else f"{space.sources.get(k, 'build-variants')}, chosen by {' and '.join(specs.get(k, ('the only value',)))}"
            )
    return assignment, provenance


def unused_variant_warnings(manifest: Manifest, space: VariantSpace) -> list[str]:
    """A declared key that no package uses does nothing (pixi #4303): say so."""
    if manifest.package is None:
        keys = list(space.values)
        return [
            f"{manifest.path}: build variant '{k}' is declared but the manifest has no [package] to use it"
            for k in keys
        ]
    used = used_keys(manifest, space)
    return [
        f"{manifest.path}: build variant '{k}' is not used by package '{manifest.package.name}' "
        f"(add {k} to its host or run dependencies, or drop the variant)"
        for k in space.values
        if k not in used
    ]
