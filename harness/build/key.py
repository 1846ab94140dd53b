"""The variant key (DESIGN invariant 1): what a build directory and an artifact belong to.

The pixi bugs this project exists for came from a build cache key that
ignored the selected variant.  Here the key is a hash of the canonical JSON
of *everything* a build depends on except the source files (those key the
artifact, see :mod:`harness.build.source`): the package's name and version,
the variant assignment, the target platform, the cell's virtual packages,
the backend's name, requested version and implementation version, the merged
backend configuration after profiles (as written, plus the values of the
outside environment variables it refers to), the profile, and every resolved
build and host package by name, version, build and sha256.  Two cells share a
build directory or an artifact only if all of that is equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.cell import Cell, canonical_json, digest
from harness.frozen import FrozenDict, freeze, thaw

KEY_FORMAT = 1
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|%([A-Za-z_][A-Za-z0-9_]*)%")


@dataclass(frozen=True)
class VariantKey:
    """A variant key and the material it hashes (kept for ``harness plan`` and reports)."""

    key: str
    material: FrozenDict[str, Any]

    def __str__(self) -> str:
        return self.key


def package_identity(packages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Resolved packages as the key sees them: name, version, build, sha256 (not the URL).

    The URL names where the archive was found, which differs between two
    cache roots holding the same bytes; the sha256 already says what it is.
    """
    out = [
        {
            "name": p["name"],
            "version": str(p["version"]),
            "build": str(p["build"]),
            "sha256": p.get("sha256"),
        }
        for p in packages
    ]
    return sorted(out, key=lambda d: (d["name"], d["version"], d["build"], d["sha256"] or ""))


def referenced_variables(config: Any) -> set[str]:
    """Names of the ``$VAR``/``${VAR}``/``%VAR%`` references anywhere in ``config``."""
    found: set[str] = set()
    if isinstance(config, str):
        for match in _REF.finditer(config):
            found.add(next(g for g in match.groups() if g))
    elif isinstance(config, Mapping):
        for value in config.values():
            found |= referenced_variables(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= referenced_variables(value)
    return found


def key_material(
    cell: Cell,
    *,
    backend_version: str,
    build_packages: Iterable[Mapping[str, Any]],
    host_packages: Iterable[Mapping[str, Any]],
    outside_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The material of ``cell``'s variant key; ``outside_env`` holds the values of
    variables the configuration refers to that the harness itself does not set."""
    if cell.package is None:
        raise ValueError(f"cell {cell.id!r} builds no package")
    return {
        "format": KEY_FORMAT,
        **cell.pure_key_material(),
        "backend_implementation": backend_version,
        "config_env": dict(sorted((outside_env or {}).items())),
        "build_packages": package_identity(build_packages),
        "host_packages": package_identity(host_packages),
    }


def key_of(material: Mapping[str, Any]) -> VariantKey:
    """The key of ``material``: 16 hex digits of the sha256 of its canonical JSON."""
    return VariantKey(key=digest(dict(material)), material=freeze(thaw(material)))


def variant_key(
    cell: Cell,
    *,
    backend_version: str,
    build_packages: Iterable[Mapping[str, Any]],
    host_packages: Iterable[Mapping[str, Any]],
    outside_env: Mapping[str, str] | None = None,
) -> VariantKey:
    """:func:`key_material` hashed."""
    return key_of(
        key_material(
            cell,
            backend_version=backend_version,
            build_packages=build_packages,
            host_packages=host_packages,
            outside_env=outside_env,
        )
    )


__all__ = [
    "VariantKey",
    "canonical_json",
    "key_material",
    "key_of",
    "package_identity",
    "referenced_variables",
    "variant_key",
]
