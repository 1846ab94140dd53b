"""pixi's merge rules: the features of an environment, on one platform, combined.

- dependencies of all features combine (every spec must hold); within a feature a
  more specific target replaces the common spec of the same package;
- channels: listed features before ``default``; each feature's channels or the
  workspace's; duplicates dropped; stable sort by priority, higher first;
- platforms intersect; ``activation.env``: the first feature wins;
- system requirements: the highest version across features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rattler import Version

from harness.errors import ManifestError
from harness.frozen import FrozenDict, freeze
from harness.manifest.model import EnvironmentDecl, Feature, Manifest, TargetTable
from harness.manifest.platforms import PlatformDecl, selector_matches, selector_specificity
from harness.specs import Dep


@dataclass(frozen=True)
class ResolvedEnvironment:
    """An environment on one platform, with a note of where each value came from."""

    name: str
    platform: PlatformDecl
    features: tuple[str, ...]
    dependencies: tuple[Dep, ...]
    host_dependencies: tuple[Dep, ...]
    build_dependencies: tuple[Dep, ...]
    constraints: tuple[Dep, ...]
    dev: tuple[Dep, ...]
    pypi_dependencies: FrozenDict[str, Any]
    activation_env: FrozenDict[str, str]
    channels: tuple[str, ...]
    platforms: tuple[PlatformDecl, ...]
    system_requirements: FrozenDict[str, str]
    solve_strategy: str
    channel_priority: str
    tasks: FrozenDict[str, Any]
    provenance: FrozenDict[str, str]

    def specs_for(self, name: str) -> tuple[str, ...]:
        return tuple(d.version for d in self.dependencies if d.name == name)


def environment_platforms(manifest: Manifest, env: EnvironmentDecl) -> tuple[PlatformDecl, ...]:
    """Workspace platforms that every feature of ``env`` supports (intersection)."""
    allowed = [p for p in manifest.platforms]
    for fname in env.all_features:
        feature = manifest.features[fname]
        if feature.platforms is not None:
            allowed = [p for p in allowed if p.name in feature.platforms]
    return tuple(allowed)


def feature_tables(feature: Feature, platform: PlatformDecl) -> list[tuple[str, TargetTable]]:
    """The feature's tables that apply on ``platform``, least specific first."""
    matching = [(sel, t) for sel, t in feature.targets if selector_matches(sel, platform)]
    matching.sort(key=lambda item: selector_specificity(item[0], platform))
    return [("", feature.common), *matching]


def _where(feature: str, selector: str) -> str:
    where = f"feature {feature}" if feature != "default" else "default feature"
    return f"{where}, target {selector}" if selector else where


def _merge_deps(attr: str, manifest: Manifest, env: EnvironmentDecl, platform: PlatformDecl,
                provenance: dict[str, str]) -> tuple[Dep, ...]:
    out: list[Dep] = []
    for fname in env.all_features:
        own: dict[str, tuple[Dep, str]] = {}
        for sel, table in feature_tables(manifest.features[fname], platform):
            for dep in getattr(table, attr):
                own[dep.name] = (dep, sel)
        for dep, sel in own.values():
            if dep not in out:
                out.append(dep)
                label = f"{attr}.{dep.name}"
                provenance[label] = (provenance[label] + "; " if label in provenance else "") + _where(fname, sel)
    return tuple(out)


def merge_channels(manifest: Manifest, features: tuple[str, ...]) -> tuple[str, ...]:
    seen: list[tuple[str, int]] = []
    for fname in features:
        feature = manifest.features[fname]
        refs = feature.channels if feature.channels is not None else manifest.channels
        for ref in refs:
            item = (ref.channel, ref.priority or 0)
            if all(existing[0] != ref.channel for existing in seen):
                seen.append(item)
    ordered = sorted(enumerate(seen), key=lambda iv: (-iv[1][1], iv[0]))
    return tuple(item[1][0] for item in ordered)


def higher(a: str, b: str) -> str:
    """The higher of two versions, compared as conda versions."""
    try:
        return a if Version(a) >= Version(b) else b
    except Exception:  # not a version (archspec names): keep the first
        return a


def resolve_environment(manifest: Manifest, env: EnvironmentDecl, platform: PlatformDecl) -> ResolvedEnvironment:
    """Apply pixi's merge rules for ``env`` on ``platform``."""
    provenance: dict[str, str] = {}
    features = env.all_features
    deps = _merge_deps("dependencies", manifest, env, platform, provenance)
    host = _merge_deps("host_dependencies", manifest, env, platform, provenance)
    build = _merge_deps("build_dependencies", manifest, env, platform, provenance)
    constraints = _merge_deps("constraints", manifest, env, platform, provenance)
    dev = _merge_deps("dev", manifest, env, platform, provenance)
    pypi: dict[str, Any] = {}
    activation: dict[str, str] = {}
    tasks: dict[str, Any] = {}
    for fname in features:
        own_env: dict[str, tuple[str, str]] = {}
        tables = feature_tables(manifest.features[fname], platform)
        for sel, table in tables:
            for k, v in table.activation_env.items():
                own_env[k] = (v, sel)
        # pixi: the first feature that defines a task wins, and within a feature its most
        # specific target; the task is taken whole (a target's task replaces the default's).
        for _, table in reversed(tables):
            for k, v in table.tasks.items():
                tasks.setdefault(k, v)
            for k, v in table.pypi_dependencies.items():
                pypi.setdefault(k, v)
        for k, (v, sel) in own_env.items():
            if k not in activation:  # the first feature wins
                activation[k] = v
                provenance[f"activation.env.{k}"] = _where(fname, sel)
    sysreq: dict[str, str] = {}
    for fname in features:
        for k, v in manifest.features[fname].system_requirements.items():
            if k == "archspec" and k in sysreq and sysreq[k] != v:
                raise ManifestError(
                    f"cannot combine archspecs: '{sysreq[k]}' and '{v}'",
                    file=manifest.path, key=["environments", env.name],
                    line=manifest.line_of("environments", env.name),
                )
            new = higher(sysreq[k], v) if k in sysreq else v
            if new != sysreq.get(k):
                sysreq[k] = new
                provenance[f"system-requirements.{k}"] = _where(fname, "")
    for k, v in platform.virtual.items():
        if k not in sysreq or higher(v, sysreq[k]) == v:
            sysreq[k] = v
            provenance[f"system-requirements.{k}"] = f"platform {platform.name}"
    strategy = manifest.solve_strategy
    for fname in features:
        if manifest.features[fname].solve_strategy:
            strategy = manifest.features[fname].solve_strategy or strategy
            break
    priority = next((manifest.features[f].channel_priority for f in features
                     if manifest.features[f].channel_priority), manifest.channel_priority)
    return ResolvedEnvironment(
        name=env.name,
        platform=platform,
        features=features,
        dependencies=deps,
        host_dependencies=host,
        build_dependencies=build,
        constraints=constraints,
        dev=dev,
        pypi_dependencies=freeze(pypi),
        activation_env=FrozenDict(activation),
        channels=merge_channels(manifest, features),
        platforms=environment_platforms(manifest, env),
        system_requirements=FrozenDict(sysreq),
        solve_strategy=strategy,
        channel_priority=priority,
        tasks=freeze(tasks),
        provenance=FrozenDict(provenance),
    )
