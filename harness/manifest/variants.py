"""Build variants: the values a workspace offers, and the one value a cell takes.

Values come from ``build-variants-files`` (read by py-rattler-build's
``VariantConfig``, so ``zip_keys`` and ``if:`` selectors mean what rattler-build
says) and from ``[workspace.build-variants]`` / its target tables, which win.
A cell's assignment is explicit: an environment that allows several values of a
used key becomes one cell per allowed value (zipped keys together); one that allows
none does not compile.
"""

from __future__ import annotations

import itertools
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


# The compilers a backend adds when its configuration lists none (pixi-build-backends' defaults).
DEFAULT_COMPILERS = {"pixi-build-cmake": ("cxx",), "pixi-build-rust": ("rust",)}


def compiler_keys(compilers: Iterable[str]) -> set[str]:
    """The variant keys a list of compilers reads: ``c`` -> ``c_compiler``, ``c_compiler_version``."""
    return {f"{c}_compiler{suffix}" for c in compilers for suffix in ("", "_version")}


def package_compilers(manifest: Manifest) -> set[str]:
    """Every compiler the package's backend configuration lists, on any target."""
    pkg = manifest.package
    if pkg is None:
        return set()
    found: set[str] = set()
    listed = False
    for config in (pkg.config, *(c for _, c in pkg.target_config)):
        value = config.get("compilers")
        if isinstance(value, (list, tuple)):
            listed = True
            found.update(str(v) for v in value)
    return found if listed else set(DEFAULT_COMPILERS.get(pkg.backend, ()))


def used_keys(manifest: Manifest, space: VariantSpace) -> set[str]:
    """Variant keys the package uses: its dependencies' names and its compilers' keys.

    A recipe-based package may use any key.  Compiler keys count, so that two
    builds with different compilers never share a variant key.
    """
    if manifest.package is None:
        return set()
    if manifest.package.backend == "pixi-build-rattler-build":
        return set(space.values)
    names = manifest.package.uses() | compiler_keys(package_compilers(manifest))
    return names & set(space.values)


def package_label(manifest: Manifest) -> str:
    """The package's name for messages, also when [package] leaves it to the backend."""
    pkg = manifest.package
    return (pkg.name if pkg is not None else None) or manifest.name or manifest.root.name


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


@dataclass(frozen=True)
class VariantChoice:
    """One allowed combination: the assignment, where each value came from, and the keys
    that the environment left open (they name the cell: ``cu13`` + python open -> ``cu13-py312``)."""

    assignment: FrozenDict[str, str]
    provenance: FrozenDict[str, str]
    open_keys: tuple[str, ...]


def _no_value_error(
    keys: Sequence[str], rows: Sequence[Sequence[str]], specs: Mapping[str, Sequence[str]],
    explicit: Mapping[str, str], where: str, manifest: Manifest,
) -> CellError:
    label = ", ".join(keys)
    offered = "; ".join(", ".join(r) for r in rows)
    asked = "; ".join(
        f"{k} {explicit[k]} (matrix axis)" if k in explicit else f"{k} {' and '.join(specs.get(k, ('*',)))}"
        for k in keys
    )
    return CellError(
        f"{where} allows no value of build variant {label}: it asks for {asked}, "
        f"the workspace offers {offered}",
        file=manifest.path, key=["workspace", "build-variants", keys[0]],
        line=manifest.line_of("workspace", "build-variants", keys[0]),
        hint=f"add a matching value to build-variants.{keys[0]} or change the environment's pin",
    )


@lru_cache(maxsize=1024)
def _allowed(
    space: VariantSpace, used: frozenset[str], specs: tuple[tuple[str, tuple[str, ...]], ...],
    explicit: tuple[tuple[str, str], ...],
) -> tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]], ...]:
    """Per group: its keys, its rows and the rows the specs allow (memoised: the cells of a
    matrix ask the same question many times)."""
    spec_map, explicit_map = dict(specs), dict(explicit)
    return tuple(
        (keys, tuple(rows), tuple(r for r in rows if _row_allowed(keys, r, spec_map, explicit_map)))
        for keys, rows in space.groups(used)
    )


def choices(
    space: VariantSpace,
    used: Iterable[str],
    specs: Mapping[str, Sequence[str]],
    explicit: Mapping[str, str],
    *,
    where: str,
    manifest: Manifest,
) -> list[VariantChoice]:
    """Every allowed combination of the used keys, in the order the workspace lists values.

    ``specs`` are the environment's version specs per package name; ``explicit``
    values (matrix axes) must be among the declared values.  A group (a key, or
    zipped keys) that allows several rows is *open*: the environment becomes one
    cell per row, where pixi's solver would silently pick one.  A group that
    allows none is an error naming the environment, the keys and the values.
    """
    relevant = tuple(sorted((k, tuple(v)) for k, v in specs.items() if k in space.values))
    per_group: list[tuple[tuple[str, ...], list[tuple[str, ...]], bool]] = []
    for keys, rows, allowed in _allowed(space, frozenset(used), relevant, tuple(sorted(explicit.items()))):
        if not allowed:
            raise _no_value_error(keys, rows, specs, explicit, where, manifest)
        per_group.append((keys, list(allowed), len(allowed) > 1))
    out: list[VariantChoice] = []
    for combo in itertools.product(*(allowed for _, allowed, _ in per_group)):
        assignment: dict[str, str] = {}
        provenance: dict[str, str] = {}
        open_keys: list[str] = []
        for (keys, allowed, is_open), row in zip(per_group, combo, strict=True):
            for i, (k, v) in enumerate(zip(keys, row, strict=True)):
                assignment[k] = v
                if k in explicit:
                    provenance[f"variant.{k}"] = f"matrix axis ({explicit[k]})"
                elif is_open:
                    provenance[f"variant.{k}"] = (
                        f"{space.sources.get(k, 'build-variants')}, one cell per allowed value"
                    )
                else:
                    provenance[f"variant.{k}"] = (
                        f"{space.sources.get(k, 'build-variants')}, chosen by "
                        f"{' and '.join(specs.get(k, ('the only value',)))}"
                    )
                # Of zipped keys, only those whose value differs between rows name the cell.
                if is_open and len({r[i] for r in allowed}) > 1:
                    open_keys.append(k)
        out.append(VariantChoice(FrozenDict(assignment), FrozenDict(provenance), tuple(open_keys)))
    return out


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._+]+")
_SHORT_KEYS = {"python": "py", "cuda-version": "cu", "cuda_version": "cu"}


def variant_label(key: str, value: str) -> str:
    """The part of a cell id that names one expanded variant value.

    Follows what users write by hand: ``python 3.12.*`` -> ``py312``,
    ``cuda-version 12.8.*`` -> ``cu128`` (``12.*`` -> ``cu12``); any other key
    ``key-value`` with everything but letters, digits, ``.``, ``_`` and ``+``
    turned into ``-`` (``c_compiler gcc`` -> ``c_compiler-gcc``).
    """
    text = str(value).strip()
    while text.endswith((".*", "*")):
        text = text[:-2] if text.endswith(".*") else text[:-1]
    short = _SHORT_KEYS.get(key)
    if short and re.fullmatch(r"\d+(?:\.\d+)*", text):
        return short + text.replace(".", "")
    body = _LABEL_UNSAFE.sub("-", text).strip("-.") or "any"
    return f"{_LABEL_UNSAFE.sub('-', key).strip('-')}-{body}"


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
        f"{manifest.path}: build variant '{k}' is not used by package '{package_label(manifest)}' "
        f"(add {k} to its host or run dependencies, or drop the variant)"
        for k in space.values
        if k not in used
    ]
