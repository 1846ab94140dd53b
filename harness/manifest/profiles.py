"""Build profiles (dev / release / custom) and the backend configuration they yield.

Precedence, later wins: ``package.build.config`` < ``package.build.target.<sel>.config``
(least specific selector first) < ``profiles.<p>.backends.<backend>`` <
``profiles.<p>.packages.<package>``; along an ``inherits`` chain the ancestor
applies first.  Tables merge key by key; any other value replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.frozen import FrozenDict, freeze, thaw
from harness.manifest.model import Manifest, PackageDecl, Profile
from harness.manifest.platforms import PlatformDecl, selector_matches, selector_specificity


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` onto ``base``: tables key by key, everything else replaced."""
    out = {k: thaw(v) for k, v in base.items()}
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = thaw(v)
    return out


def profile_chain(profiles: Mapping[str, Profile], name: str) -> list[Profile]:
    """``name`` and its ancestors, root first (the reader already rejected cycles)."""
    chain: list[Profile] = []
    current: str | None = name
    while current is not None:
        profile = profiles[current]
        chain.append(profile)
        current = profile.inherits
    return list(reversed(chain))


def profile_base(profiles: Mapping[str, Profile], name: str) -> str:
    """``dev`` or ``release``: what a custom profile ultimately behaves as."""
    return profile_chain(profiles, name)[0].name


def config_layers(
    package: PackageDecl, platform: PlatformDecl, profiles: Mapping[str, Profile], profile: str
) -> list[tuple[str, Mapping[str, Any]]]:
    """The configuration layers in application order, each with a label for ``show``."""
    layers: list[tuple[str, Mapping[str, Any]]] = [("package.build.config", package.config)]
    targets = [(sel, cfg) for sel, cfg in package.target_config if selector_matches(sel, platform)]
    targets.sort(key=lambda item: selector_specificity(item[0], platform))
    layers += [(f"package.build.target.{sel}.config", cfg) for sel, cfg in targets]
    chain = profile_chain(profiles, profile)
    for p in chain:
        if package.backend in p.backends:
            layers.append((f"profiles.{p.name}.backends.{package.backend}", p.backends[package.backend]))
    for p in chain:
        if package.name and package.name in p.packages:
            layers.append((f"profiles.{p.name}.packages.{package.name}", p.packages[package.name]))
    return layers


def merged_config(
    package: PackageDecl, platform: PlatformDecl, profiles: Mapping[str, Profile], profile: str
) -> tuple[FrozenDict[str, Any], dict[str, str]]:
    """The backend configuration after profiles, and which layer set each top-level key."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for label, layer in config_layers(package, platform, profiles, profile):
        merged = deep_merge(merged, layer)
        for k in layer:
            origin[k] = label
    return freeze(merged), origin


def manifest_profiles(manifest: Manifest) -> Mapping[str, Profile]:
    return manifest.profiles
