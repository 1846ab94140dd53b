"""pixi manifest text -> :class:`~harness.manifest.model.Manifest`, validated as pixi does.

Every rejection is a ManifestError naming the file, the key path and its line,
with pixi's wording where pixi has one (the corpus in ``shared/corpus`` holds
pixi's own messages).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness import inputs
from harness.build.expand import ENV_HINT, env_name_problem, env_value_problem
from harness.errors import ManifestError
from harness.frozen import FrozenDict, freeze
from harness.manifest.model import (
    DEFAULT_FEATURE,
    ChannelRef,
    EnvironmentDecl,
    Feature,
    Manifest,
    PackageDecl,
    Profile,
    TargetedDeps,
    TargetTable,
)
from harness.manifest.platforms import (
    FAMILIES,
    KNOWN_SUBDIRS,
    PlatformDecl,
    selector_error,
    selector_matches,
)
from harness.specs import (
    Dep,
    package_name_problem,
    parse_cutoff,
    parse_dep,
    valid_version,
    version_problem,
)
from harness.tomlfile import TomlDocument, read_toml, resolve_path

FEATURE_KEYS = (
    "platforms",
    "channels",
    "channel-priority",
    "solve-strategy",
    "target",
    "dependencies",
    "host-dependencies",
    "build-dependencies",
    "constraints",
    "pypi-dependencies",
    "dev",
    "activation",
    "tasks",
    "pypi-options",
    "system-requirements",
)
TARGET_KEYS = (
    "dependencies",
    "host-dependencies",
    "build-dependencies",
    "run-dependencies",
    "constraints",
    "pypi-dependencies",
    "dev",
    "activation",
    "tasks",
    "build-variants",
)
SYSTEM_REQUIREMENT_KEYS = ("cuda", "libc", "linux", "macos", "archspec", "glibc", "osx")
RICH_PLATFORM_KEYS = ("name", "platform", "cuda", "glibc", "libc", "linux", "macos", "osx", "archspec", "windows")
# pixi derives a nameless entry's name from these keys, in this order (toml/platform.rs).
_NAME_KEYS = ("cuda", "archspec", "glibc", "linux", "macos", "windows")
_PLATFORM_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
PREVIEW_BUILD = "pixi-build"
SOLVE_STRATEGIES = ("highest", "lowest", "lowest-direct")
_WORKSPACE_ROOT = "\0root"  # where a member manifest's parent workspace lives (never a TOML key)


def load_manifest(path: str | Path) -> Manifest:
    """Read ``pixi.toml``, ``pyproject.toml`` or a directory holding one of them."""
    path = Path(path)
    if path.is_dir():
        for name in ("pixi.toml", "pyproject.toml"):
            inputs.note(path / name)
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ManifestError(
                "no pixi.toml or pyproject.toml here", file=path, hint="point at a pixi manifest"
            )
    doc = read_toml(resolve_path(path))
    return Reader(doc).read()


def find_parent_workspace(path: Path) -> dict[str, Any]:
    """The ``[workspace]`` table of the nearest parent manifest, for package-only manifests."""
    for parent in path.parent.parents:
        for name in ("pixi.toml", "pyproject.toml"):
            candidate = parent / name
            inputs.note(candidate)
            if not candidate.is_file():
                continue
            try:
                data = read_toml(candidate).data
            except ManifestError:
                continue
            if name == "pyproject.toml":
                tool = data.get("tool")
                data = tool.get("pixi") if isinstance(tool, dict) else None
                if not isinstance(data, dict):
                    continue
            ws = data.get("workspace", data.get("project"))
            if isinstance(ws, dict):
                preview = ws.get("preview", [])
                preview = [p for p in preview if isinstance(p, str)] if isinstance(preview, list) else []
                return {**ws, "preview": [*preview, PREVIEW_BUILD], _WORKSPACE_ROOT: str(parent)}
    return {"channels": [], "platforms": [], "preview": [PREVIEW_BUILD]}


def _name_segment(text: str) -> str:
    """pixi's ``sanitize_name_segment``: runs of other characters become one ``-``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def derived_platform_name(subdir: str, item: Mapping[str, Any]) -> str:
    """The name pixi gives a platform entry without one: ``{ platform = "linux-64", cuda =
    "12.9" }`` is ``linux-64-cuda-12-9`` (keys in pixi's order; ``osx`` is ``macos``)."""
    parts = [subdir]
    for key in _NAME_KEYS:
        value = item.get(key, item.get("osx") if key == "macos" else None)
        if isinstance(value, str):
            parts.append(f"{key}-{_name_segment(value)}")
    return "-".join(parts)


def did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"Did you mean '{close[0]}'?" if close else None


class Reader:
    """One pass over one document.  Collects warnings; raises on the first error."""

    def __init__(self, doc: TomlDocument) -> None:
        self.doc = doc
        self.prefix: tuple[str, ...] = ()
        self.warnings: list[str] = []
        data = doc.data
        self.pyproject_project: dict[str, Any] = {}
        tool = data.get("tool")
        self.is_pyproject = doc.path.name == "pyproject.toml" or (
            isinstance(tool, dict) and "pixi" in tool and "workspace" not in data
        )
        if self.is_pyproject:
            project = data.get("project")
            self.pyproject_project = project if isinstance(project, dict) else {}
            tool = data.get("tool")
            pixi = tool.get("pixi") if isinstance(tool, dict) else None
            if pixi is None:
                self.warnings.append(
                    f"{doc.path}: no [tool.pixi] table: read as an empty workspace"
                )
                pixi = {"workspace": {"channels": [], "platforms": []}}
            self.prefix = ("tool", "pixi")
            if not isinstance(pixi, dict):
                raise self.err(f"expected a table, found {_kind(pixi)}", hint="[tool.pixi] holds the pixi manifest")
            data = pixi
        self.data: dict[str, Any] = data

    # -- error helpers -------------------------------------------------------

    def err(self, message: str, *key: str | int, hint: str | None = None) -> ManifestError:
        full = (*self.prefix, *key)
        return ManifestError(
            message,
            file=self.doc.path,
            key=list(full) or None,
            line=self.doc.line_of(full) if full else None,
            hint=hint,
        )

    def table(self, value: Any, *key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.err(f"expected a table, found {_kind(value)}", *key)
        return value

    def string(self, value: Any, *key: str) -> str:
        if not isinstance(value, str):
            raise self.err(f"expected a string, found {_kind(value)}", *key)
        return value

    def strings(self, value: Any, *key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.err(f"expected a list of strings, found {_kind(value)}", *key)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.err(f"entry {i} must be a string, found {_kind(item)}", *key)
        return tuple(value)

    def no_dates(self, value: Any, *key: str | int) -> Any:
        """``value`` unchanged, if no TOML date or time hides in it.

        Configuration is hashed (variant keys) and printed as JSON, and no
        backend takes a date: one is a mistake, reported where it is written.
        """
        if isinstance(value, (datetime.date, datetime.time)):
            raise self.err(f"expected a string, number, boolean, array or table, found a date/time ({value})",
                           *key, hint="quote it if it is meant as text")
        if isinstance(value, dict):
            for k, v in value.items():
                self.no_dates(v, *key, k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.no_dates(v, *key, i)
        return value

    # -- the document ----------------------------------------------------------

    def read(self) -> Manifest:
        data = self.data
        if "workspace" in data and "project" in data and not self.is_pyproject:
            raise self.err("both [workspace] and [project] are defined", "project",
                           hint="[project] is the old name of [workspace]; keep one")
        ws_key = "workspace" if "workspace" in data else "project"
        if ws_key not in data:
            if "package" not in data:
                raise self.err("missing the [workspace] table", hint="add [workspace] with channels and platforms")
            # A package manifest inside a workspace: the workspace lives in a parent directory.
            data[ws_key] = find_parent_workspace(self.doc.path)
        ws = self.table(data[ws_key], ws_key)
        self.ws_key = ws_key
        self.ws = ws
        preview = ws.get("preview", [])
        if isinstance(preview, bool):
            preview = (PREVIEW_BUILD,) if preview else ()
        else:
            preview = self.strings(preview, ws_key, "preview")
        self.pixi_build = PREVIEW_BUILD in preview or ("package" in data and self._package_backend_present())
        if "channels" not in ws:
            raise self.err("missing field 'channels'", ws_key,
                           hint='add `channels = ["conda-forge"]` (or a local path)')
        channels = self.read_channels(ws["channels"], ws_key, "channels")
        platforms = self.read_platforms(ws.get("platforms", []), ws_key)
        self.platforms = platforms
        self.platform_names = {p.name for p in platforms}
        name = ws.get("name", self.pyproject_project.get("name"))
        version = ws.get("version", self.pyproject_project.get("version"))
        if name is not None and not isinstance(name, str):
            raise self.err("expected a string", ws_key, "name")
        if version is not None and not isinstance(version, str):
            raise self.err("expected a string", ws_key, "version")
        build_variants = self.read_variants(ws.get("build-variants"), ws_key, "build-variants")
        target_variants: list[tuple[str, FrozenDict[str, tuple[str, ...]]]] = []
        for sel, table in self.table(ws.get("target"), ws_key, "target").items():
            self.check_selector(sel, (ws_key, "target", sel))
            table = self.table(table, ws_key, "target", sel)
            if "build-variants" in table:
                target_variants.append(
                    (sel, self.read_variants(table["build-variants"], ws_key, "target", sel, "build-variants"))
                )
        files = tuple(
            resolve_path(self.doc.path.parent / f)
            for f in self.strings(ws.get("build-variants-files", []), ws_key, "build-variants-files")
        )
        for f, raw in zip(files, ws.get("build-variants-files", []), strict=True):
            if not f.is_file():
                raise self.err(f"build variant file '{raw}' does not exist", ws_key, "build-variants-files",
                               hint=f"looked for {f}")
        strategy = ws.get("solve-strategy", "highest")
        if strategy not in SOLVE_STRATEGIES:
            raise self.err(f"unknown solve strategy '{strategy}'", ws_key, "solve-strategy",
                           hint="use highest, lowest or lowest-direct")
        priority = self.channel_priority(ws.get("channel-priority", "strict"), ws_key, "channel-priority")
        exclude_newer = ws.get("exclude-newer")
        if exclude_newer is not None:
            exclude_newer = self.cutoff(exclude_newer, ws_key, "exclude-newer")
        per_package: dict[str, str] = {}
        for table in ("exclude-newer", "pypi-exclude-newer"):
            for pkg, cutoff in self.table(data.get(table), table).items():
                per_package[f"{table}.{pkg}"] = self.cutoff(cutoff, table, pkg)

        features = {DEFAULT_FEATURE: self.read_feature(DEFAULT_FEATURE, data, root=True)}
        feature_tables = self.table(data.get("feature"), "feature")
        for fname, ftable in feature_tables.items():
            if fname == DEFAULT_FEATURE:
                raise self.err(
                    "The feature 'default' is reserved and cannot be redefined", "feature", fname,
                    hint="All tables at the root of the document are implicitly added to the "
                    "'default' feature, use those instead.",
                )
            features[fname] = self.read_feature(fname, self.table(ftable, "feature", fname), root=False)
        if self.is_pyproject:
            self.add_pyproject_features(features)
        profiles = self.read_profiles(data.get("profiles"))
        environments = self.read_environments(data.get("environments"), features, profiles)
        self.check_environments(environments, features)
        package = self.read_package(data.get("package"), name, version) if "package" in data else None
        self.warn_unused(features, environments)
        return Manifest(
            path=self.doc.path,
            text=self.doc.text,
            name=name,
            version=version,
            channels=channels,
            platforms=self.platforms,
            preview=tuple(preview),
            build_variants=build_variants,
            target_build_variants=tuple(target_variants),
            build_variants_files=files,
            features=FrozenDict(features),
            environments=FrozenDict(environments),
            package=package,
            profiles=FrozenDict(profiles),
            tasks=freeze(self.table(data.get("tasks"), "tasks")),
            solve_strategy=strategy,
            channel_priority=priority,
            exclude_newer=exclude_newer,
            exclude_newer_packages=FrozenDict(per_package),
            warnings=tuple(self.warnings),
            key_prefix=self.prefix,
        )

    def add_pyproject_features(self, features: dict[str, Feature]) -> None:
        """What pixi reads from ``[project]`` (pyproject.rs): ``requires-python`` is the default
        feature's ``python`` dependency (unless it has one), ``dependencies`` its PyPI
        dependencies, and each extra of ``optional-dependencies`` and each
        ``[dependency-groups]`` group a feature of the same name with its PyPI dependencies."""
        project = self.pyproject_project
        groups: dict[str, list[Any]] = {}
        for table_name, key in (("optional-dependencies", ("project", "optional-dependencies")),
                                ("dependency-groups", ("dependency-groups",))):
            raw = project.get(table_name) if key[0] == "project" else self.doc.data.get(table_name)
            for group, reqs in self.outer_table(raw, *key).items():
                groups.setdefault(group, []).extend(self.outer_list(reqs, *key, group))
        default = features[DEFAULT_FEATURE]
        common = default.common
        if not any(d.name == "python" for d in common.dependencies):
            spec = project.get("requires-python", "*")
            if not isinstance(spec, str):
                raise ManifestError("expected a string", file=self.doc.path, key=["project", "requires-python"],
                                    line=self.doc.line_of(("project", "requires-python")))
            spec = re.sub(r"\s+", "", spec)  # PEP 440 allows spaces after operators
            spec = spec[2:] if spec.startswith("==") and not spec.startswith("===") else spec
            if problem := valid_version(spec or "*"):
                raise ManifestError(f"requires-python '{spec}' is not a version spec: {problem}",
                                    file=self.doc.path, key=["project", "requires-python"],
                                    line=self.doc.line_of(("project", "requires-python")))
            common = dataclasses.replace(common, dependencies=(*common.dependencies, Dep("python", spec or "*")))
        deps = self.outer_list(project.get("dependencies", []), "project", "dependencies")
        pypi = {**pypi_requirements(deps, self.outer_error("project", "dependencies")), **common.pypi_dependencies}
        features[DEFAULT_FEATURE] = dataclasses.replace(
            default, common=dataclasses.replace(common, pypi_dependencies=freeze(pypi)))
        for group, reqs in groups.items():
            err = self.outer_error("dependency-groups", group)
            own = features.get(group, Feature(group))
            merged = {**pypi_requirements(reqs, err), **own.common.pypi_dependencies}
            features[group] = dataclasses.replace(
                own, common=dataclasses.replace(own.common, pypi_dependencies=freeze(merged)))

    def outer_error(self, *key: str) -> Callable[[str], ManifestError]:
        return lambda message: ManifestError(message, file=self.doc.path, key=list(key),
                                             line=self.doc.line_of(key))

    def outer_table(self, value: Any, *key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.outer_error(*key)(f"expected a table, found {_kind(value)}")
        return value

    def outer_list(self, value: Any, *key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.outer_error(*key)(f"expected a list of requirements, found {_kind(value)}")
        return value

    def channel_priority(self, value: Any, *key: str) -> str:
        if value not in ("strict", "disabled"):
            raise self.err(f"unknown channel priority {value!r}", *key, hint="use strict or disabled")
        return str(value)

    def cutoff(self, value: Any, *key: str) -> str:
        """``exclude-newer``: checked here, so a bad value fails when the manifest loads."""
        if isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        if not isinstance(value, str):
            raise self.err(f"expected a string, found {_kind(value)}", *key)
        try:
            parse_cutoff(value)
        except ValueError:
            raise self.err(f"'{value}' is not a time, a date or a duration", *key,
                           hint='write "2025-01-01", "2025-01-01T12:00:00Z" or "7d"') from None
        return value

    def _package_backend_present(self) -> bool:
        return False

    # -- workspace pieces -------------------------------------------------------

    def read_channels(self, value: Any, *key: str) -> tuple[ChannelRef, ...]:
        if not isinstance(value, list):
            raise self.err(f"expected a list of channels, found {_kind(value)}", *key)
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(ChannelRef(item))
            elif isinstance(item, dict) and isinstance(item.get("channel"), str):
                if "exclude-newer" in item:
                    raise self.err(
                        f"channel '{item['channel']}': a per-channel exclude-newer cannot be honoured: "
                        "py-rattler's solver takes one cutoff for the whole solve", *key,
                        hint="use the workspace's exclude-newer alone")
                priority = item.get("priority")
                if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
                    raise self.err("`priority` must be an integer", *key)
                out.append(ChannelRef(item["channel"], priority))
            else:
                raise self.err(
                    f"channel entry {i} must be a string or {{ channel = ..., priority = ... }}", *key
                )
            written = out[-1].channel
            if not written.strip() or any(ord(c) < 32 or ord(c) == 127 for c in written):
                raise self.err(f"channel entry {i} ({written!r}) is empty or holds control characters", *key,
                               hint='write a channel name ("conda-forge"), a URL or a path ("./channel")')
        return tuple(out)

    def read_platforms(self, value: Any, ws_key: str) -> tuple[PlatformDecl, ...]:
        if not isinstance(value, list):
            raise self.err(f"expected a list of platforms, found {_kind(value)}", ws_key, "platforms")
        out: list[PlatformDecl] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            if isinstance(item, str):
                if item not in KNOWN_SUBDIRS:
                    raise self.err(f"'{item}' is not a known platform", ws_key, "platforms",
                                   hint=did_you_mean(item, KNOWN_SUBDIRS) or "use a conda subdir such as linux-64")
                decl = PlatformDecl(item, item)
            elif isinstance(item, dict):
                decl = self.read_rich_platform(item, ws_key, i)
            else:
                raise self.err(f"platform entry {i} must be a string or a table", ws_key, "platforms")
            if decl.name in seen:
                raise self.err(f"duplicate key: `{decl.name}`", ws_key, "platforms",
                               hint="each platform name may be declared once")
            seen[decl.name] = i
            out.append(decl)
        return tuple(out)

    def read_rich_platform(self, item: dict[str, Any], ws_key: str, i: int) -> PlatformDecl:
        key = (ws_key, "platforms")
        if not item:
            raise self.err(f"platform entry {i} is an empty table", *key,
                           hint='give at least `name` or `platform`, e.g. { name = "linux-64-cuda", platform = "linux-64", cuda = "12" }')
        unknown = [k for k in item if k not in RICH_PLATFORM_KEYS]
        if unknown:
            raise self.err(f"unknown key '{unknown[0]}' in platform entry {i}", *key,
                           hint="expected only " + ", ".join(RICH_PLATFORM_KEYS))
        name = item.get("name")
        subdir = item.get("platform")
        if (name is not None and not isinstance(name, str)) or (subdir is not None and not isinstance(subdir, str)):
            raise self.err(f"platform entry {i}: `name` and `platform` must be strings", *key)
        if subdir is None:
            subdir = name
        if subdir not in KNOWN_SUBDIRS:
            raise self.err(f"'{subdir}' is not a known platform", *key,
                           hint=did_you_mean(str(subdir), KNOWN_SUBDIRS) or "use a conda subdir such as linux-64")
        virtual = self.rich_platform_virtual(item, key, i)
        name = name or derived_platform_name(subdir, item)
        if name in FAMILIES:
            raise self.err(f"the platform name '{name}' is reserved (it is a target selector)", *key,
                           hint="choose another name, such as linux-64-cuda")
        if not _PLATFORM_NAME.match(name):
            raise self.err(f"'{name}' is not a valid platform name", *key,
                           hint="use lowercase letters, digits, '-' and '_'")
        if name in KNOWN_SUBDIRS and name != subdir:
            raise self.err(f"the platform name '{name}' is another platform's subdir", *key)
        return PlatformDecl(name, subdir, FrozenDict(virtual))

    def rich_platform_virtual(self, item: dict[str, Any], key: tuple[str, ...], i: int) -> dict[str, str]:
        virtual = {}
        for k in ("cuda", "glibc", "libc", "linux", "macos", "osx", "archspec", "windows"):
            if k in item:
                v = item[k]
                if not isinstance(v, str):
                    raise self.err(f"platform entry {i}: `{k}` must be a string", *key)
                if k != "archspec" and (problem := version_problem(v)):
                    raise self.err(f"platform entry {i}: `{k}`: {problem}", *key,
                                   hint=f'write a version such as {k} = "12"')
                virtual["libc" if k in ("glibc", "libc") else "macos" if k == "osx" else k] = v
        return virtual

    def read_variants(self, value: Any, *key: str) -> FrozenDict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for name, values in self.table(value, *key).items():
            if isinstance(values, (str, int, float)) and not isinstance(values, bool):
                values = [values]
            if not isinstance(values, list) or not all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values
            ):
                raise self.err("build variant values must be a list of strings", *key, name)
            if not values:
                raise self.err("a build variant needs at least one value", *key, name)
            out[name] = tuple(str(v) for v in values)
        return FrozenDict(out)

    def check_selector(
        self, selector: str, key: tuple[str, ...], platforms: tuple[str, ...] | None = None, feature: str | None = None
    ) -> None:
        problem = selector_error(selector, self.platform_names)
        if problem:
            raise self.err(problem, *key, hint="use a platform (linux-64), a family (linux, unix, win, osx) or a declared platform name")
        if selector.startswith("if("):
            return
        scope = [p for p in self.platforms if platforms is None or p.name in platforms]
        if scope and not any(selector_matches(selector, p) for p in scope):
            owner = f"the feature '{feature}'" if platforms is not None else "the workspace"
            self.warnings.append(
                f"The target selector '{selector}' does not match any of the platforms supported by {owner}"
            )

    # -- features ---------------------------------------------------------------

    def read_feature_at(self, name: str, table: dict[str, Any], base: tuple[str, ...]) -> Feature:
        """A feature written somewhere other than ``[feature.<name>]`` (inline in an environment)."""
        return self.read_feature(name, table, root=False, base=base)

    def read_feature(
        self, name: str, table: dict[str, Any], *, root: bool, base: tuple[str, ...] | None = None
    ) -> Feature:
        if base is None:
            base = () if root else ("feature", name)
        if not root:
            unknown = [k for k in table if k not in FEATURE_KEYS]
            if unknown:
                k = unknown[0]
                raise self.err(
                    "Unexpected keys, expected only " + ", ".join(f"'{x}'" for x in FEATURE_KEYS),
                    *base, k,
                    hint=f"'{k}' was not expected here. " + (did_you_mean(k, FEATURE_KEYS) or ""),
                )
        common = self.read_target_table(table, base, feature=name, selector=None)
        targets = []
        own_platforms = table.get("platforms") if not root and isinstance(table.get("platforms"), list) else None
        for sel, ttable in self.table(table.get("target"), *base, "target").items():
            self.check_selector(sel, (*base, "target", sel), tuple(own_platforms) if own_platforms else None, name)
            ttable = self.table(ttable, *base, "target", sel)
            unknown = [k for k in ttable if k not in TARGET_KEYS]
            if unknown:
                raise self.err(f"unknown field `{unknown[0]}`", *base, "target", sel, unknown[0],
                               hint="a target table takes " + ", ".join(TARGET_KEYS)
                               + (" (system requirements are never target-specific)" if unknown[0] == "system-requirements" else ""))
            if not root and "build-variants" in ttable:
                raise self.err("build variants are set on the workspace, not on a feature", *base, "target", sel)
            targets.append((sel, self.read_target_table(ttable, (*base, "target", sel), feature=name, selector=sel)))
        platforms = None
        if "platforms" in table:
            platforms = self.strings(table["platforms"], *base, "platforms")
            if not root:
                for p in platforms:
                    if p not in self.platform_names and p in KNOWN_SUBDIRS and not any(d.is_rich for d in self.platforms):
                        # pixi: a workspace of plain subdirs takes a feature's other subdirs in.
                        self.platforms = (*self.platforms, PlatformDecl(p, p))
                        self.platform_names.add(p)
                    if p not in self.platform_names:
                        declared = ", ".join(sorted(self.platform_names)) or "nothing"
                        raise self.err(
                            f"feature '{name}' references platform '{p}' which is not declared in the workspace",
                            *base, "platforms", hint=f"the workspace declares: {declared}",
                        )
        channels = None
        if "channels" in table and not root:
            channels = self.read_channels(table["channels"], *base, "channels")
        sysreq = self.read_system_requirements(table.get("system-requirements"), (*base, "system-requirements"))
        if root and "system-requirements" in table:
            listed = ", ".join(f"{k} = {v}" for k, v in sysreq.items())
            self.warnings.append(
                "the `[system-requirements]` table is deprecated in favor of virtual packages on "
                f"`platforms` ({listed})"
            )
        for key in ("channel-priority", "solve-strategy"):
            if key in table and not isinstance(table[key], str):
                raise self.err("expected a string", *base, key)
        if "channel-priority" in table:
            self.channel_priority(table["channel-priority"], *base, "channel-priority")
        if table.get("solve-strategy") not in (None, *SOLVE_STRATEGIES):
            raise self.err(f"unknown solve strategy '{table['solve-strategy']}'", *base, "solve-strategy",
                           hint="use highest, lowest or lowest-direct")
        return Feature(
            name=name,
            common=common,
            targets=tuple(targets),
            channels=channels,
            platforms=platforms if not root else None,
            system_requirements=sysreq,
            channel_priority=table.get("channel-priority"),
            solve_strategy=table.get("solve-strategy"),
        )

    def read_target_table(
        self, table: dict[str, Any], base: tuple[str, ...], *, feature: str, selector: str | None
    ) -> TargetTable:
        for kind in ("host-dependencies", "build-dependencies"):
            if kind in table and self.pixi_build:
                raise self.err(
                    f"When `pixi-build` is enabled, {kind} can only be specified for a package.",
                    *base, kind,
                    hint=f"move them to [package.{kind}]",
                )
        if "run-dependencies" in table:
            if not self.pixi_build:
                raise self.err(
                    "[run-dependencies] are only available when using the `pixi-build` preview flag.",
                    *base, "run-dependencies",
                    hint="Run `pixi workspace preview add pixi-build` to enable the preview flag",
                )
            raise self.err("run-dependencies can only be specified for a package", *base, "run-dependencies",
                           hint="move them to [package.run-dependencies]")
        deps = self.read_deps(table.get("dependencies"), (*base, "dependencies"))
        host = self.read_deps(table.get("host-dependencies"), (*base, "host-dependencies"))
        build = self.read_deps(table.get("build-dependencies"), (*base, "build-dependencies"))
        constraints = self.read_deps(table.get("constraints"), (*base, "constraints"))
        for dep in constraints:
            if dep.is_source:
                raise self.err(
                    f"source specifications are not supported in `[constraints]`, but '{dep.name}' is a source specification",
                    *base, "constraints", dep.name,
                    hint="constraints only apply to packages resolved from channels, not source packages",
                )
        pypi = self.table(table.get("pypi-dependencies"), *base, "pypi-dependencies")
        for pname, pval in pypi.items():
            if not isinstance(pval, (str, dict)):
                raise self.err("expected a version string or a table", *base, "pypi-dependencies", pname)
            self.no_dates(pval, *base, "pypi-dependencies", pname)
        activation = self.table(table.get("activation"), *base, "activation")
        env = self.table(activation.get("env"), *base, "activation", "env")
        for k, v in env.items():
            if not isinstance(v, str):
                raise self.err(f"activation variables must be strings, found {_kind(v)}", *base, "activation", "env", k,
                               hint=f'write {k} = "..."')
            if problem := env_name_problem(k) or env_value_problem(v):
                raise self.err(problem, *base, "activation", "env", k, hint=ENV_HINT)
        scripts = self.strings(activation.get("scripts", []), *base, "activation", "scripts")
        tasks = self.table(table.get("tasks"), *base, "tasks")
        dev = self.read_deps(table.get("dev"), (*base, "dev"))
        for dep in dev:
            if not dep.is_source:
                raise self.err(f"'{dep.name}' in [dev] must be a source package (path or git)", *base, "dev",
                               dep.name, hint=f'write {dep.name} = {{ path = "." }}')
        return TargetTable(
            dev=dev,
            dependencies=deps,
            host_dependencies=host,
            build_dependencies=build,
            constraints=constraints,
            pypi_dependencies=freeze(pypi),
            activation_env=FrozenDict(env),
            activation_scripts=scripts,
            tasks=freeze(tasks),
        )

    def inherited(self, name: str, spec: Any, key: tuple[str, ...]) -> Any:
        """``{ workspace = true }``: the entry of ``[workspace.dependencies]`` (pixi's pool), a
        relative ``path`` re-anchored from the workspace's directory to this manifest's."""
        if not (isinstance(spec, dict) and "workspace" in spec):
            return spec
        if spec["workspace"] is not True:
            raise self.err("`workspace` cannot be false", *key, name,
                           hint="By default no fields are inherited from the workspace")
        pool = self.ws.get("dependencies")
        if not isinstance(pool, dict) or name not in pool:
            raise self.err(f"the workspace does not define a dependency '{name}'", *key, name,
                           hint=f"add {name} to [workspace.dependencies] or write its spec here")
        entry = pool[name]
        root = self.ws.get(_WORKSPACE_ROOT)
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(root, str):
            target = Path(root) / entry["path"]
            entry = {**entry, "path": os.path.relpath(target, self.doc.path.parent)}
        return entry

    def read_deps(self, value: Any, key: tuple[str, ...]) -> tuple[Dep, ...]:
        out = []
        for name, spec in self.table(value, *key).items():
            spec = self.inherited(name, spec, key)
            dep = parse_dep(name, spec)
            if isinstance(dep, str):
                raise self.err(dep, *key, name)
            if not dep.is_source and (problem := valid_version(dep.version)):
                raise self.err(f"invalid version spec '{dep.version}': {problem}", *key, name)
            out.append(dep)
        return tuple(out)

    def read_system_requirements(self, value: Any, key: tuple[str, ...]) -> FrozenDict[str, str]:
        table = self.table(value, *key)
        out: dict[str, str] = {}
        for k, v in table.items():
            if k not in SYSTEM_REQUIREMENT_KEYS:
                raise self.err(f"unknown system requirement '{k}'", *key, k,
                               hint="expected one of " + ", ".join(SYSTEM_REQUIREMENT_KEYS))
            if k in ("libc", "glibc") and isinstance(v, dict):
                family = v.get("family", "glibc")
                ver = v.get("version")
                if not isinstance(ver, (str, int, float)) or isinstance(ver, bool):
                    raise self.err("libc needs a `version`", *key, k)
                if not isinstance(family, str):
                    raise self.err(f"expected the libc `family` as a string, found {_kind(family)}", *key, k)
                if family != "glibc":
                    out["libc_family"] = str(family)
                v = ver
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                raise self.err(f"expected a version string, found {_kind(v)}", *key, k)
            if k != "archspec" and (problem := version_problem(v)):
                raise self.err(problem, *key, k, hint=f'write a version such as {k} = "12"')
            out["libc" if k == "glibc" else "macos" if k == "osx" else k] = v
        return FrozenDict(out)

    # -- environments -------------------------------------------------------------

    def read_environments(
        self, value: Any, features: dict[str, Feature], profiles: dict[str, Profile]
    ) -> dict[str, EnvironmentDecl]:
        out: dict[str, EnvironmentDecl] = {}
        for name, entry in self.table(value, "environments").items():
            key = ("environments", name)
            if isinstance(entry, list):
                feats = self.strings(entry, *key)
                decl = EnvironmentDecl(name=name, features=feats)
            elif isinstance(entry, dict):
                allowed = ("features", "no-default-feature", "solve-group", "profile")
                inline = {k: v for k, v in entry.items() if k in FEATURE_KEYS and k not in allowed}
                if inline:
                    # pixi lets an environment carry its own feature content; it acts as
                    # the environment's first (most specific) feature.
                    own = f"{name}"
                    if own in features:
                        own = f"env-{name}"
                    features[own] = self.read_feature_at(own, inline, ("environments", name))
                    entry = {k: v for k, v in entry.items() if k not in inline}
                    entry["features"] = [own, *entry.get("features", [])]
                unknown = [k for k in entry if k not in allowed]
                if unknown:
                    raise self.err(f"unknown field `{unknown[0]}`", *key,
                                   hint="an environment takes " + ", ".join(allowed))
                feats = self.strings(entry.get("features", []), *key, "features")
                ndf = entry.get("no-default-feature", False)
                if not isinstance(ndf, bool):
                    raise self.err("expected true or false", *key, "no-default-feature")
                group = entry.get("solve-group")
                if group is not None and not isinstance(group, str):
                    raise self.err("expected a string", *key, "solve-group")
                profile = entry.get("profile")
                if profile is not None:
                    profile = self.string(profile, *key, "profile")
                    if profile not in profiles:
                        raise self.err(f"unknown profile '{profile}'", *key, "profile",
                                       hint="known profiles: " + ", ".join(sorted(profiles)))
                decl = EnvironmentDecl(name, feats, ndf, group, profile)
            else:
                raise self.err("expected a list of features or a table", *key)
            seen: set[str] = set()
            for f in decl.features:
                if f in seen:
                    raise self.err(f"The feature '{f}' is included more than once.", *key,
                                   hint="Since the order of the features matters, a duplicate feature is ambiguous")
                seen.add(f)
                if f not in features:
                    raise self.err(f"The feature '{f}' is not defined in the manifest", *key,
                                   hint="Add the feature to the manifest"
                                   + (f" ({did_you_mean(f, list(features))})" if did_you_mean(f, list(features)) else ""))
            out[name] = decl
        if DEFAULT_FEATURE not in out:
            out = {DEFAULT_FEATURE: EnvironmentDecl(DEFAULT_FEATURE, implicit=True), **out}
        return out

    def check_environments(self, envs: dict[str, EnvironmentDecl], features: dict[str, Feature]) -> None:
        """Environment-level conflicts pixi reports at load time (archspecs)."""
        for env in envs.values():
            archs = {features[f].system_requirements.get("archspec") for f in env.all_features} - {None}
            if len(archs) > 1:
                a, b = sorted(archs)[:2]
                raise self.err(f"cannot combine archspecs: '{a}' and '{b}'", "environments", env.name,
                               hint="while resolving system requirements of the environment's features")

    def warn_unused(self, features: dict[str, Feature], envs: dict[str, EnvironmentDecl]) -> None:
        used = {f for e in envs.values() for f in e.all_features}
        for name in features:
            if name not in used:
                self.warnings.append(
                    f"The feature '{name}' is defined but not used in any environment. Dependencies of "
                    "unused features are not resolved or checked"
                )

    # -- profiles -------------------------------------------------------------------

    def read_profiles(self, value: Any) -> dict[str, Profile]:
        raw = self.table(value, "profiles")
        out: dict[str, Profile] = {}
        for name in ("dev", "release"):
            out[name] = Profile(name)
        for name, table in raw.items():
            key = ("profiles", name)
            table = self.table(table, *key)
            unknown = [k for k in table if k not in ("inherits", "backends", "packages")]
            if unknown:
                raise self.err(f"unknown field `{unknown[0]}` in a profile", *key,
                               hint="a profile takes inherits, backends and packages")
            inherits = table.get("inherits")
            if name in ("dev", "release"):
                if inherits is not None:
                    raise self.err(f"the built-in profile '{name}' cannot inherit", *key, "inherits")
            elif inherits is None:
                raise self.err(f"the custom profile '{name}' must inherit from an existing profile", *key,
                               hint='add `inherits = "dev"` or `inherits = "release"`')
            else:
                inherits = self.string(inherits, *key, "inherits")
            backends = {
                b: freeze(self.no_dates(self.table(t, *key, "backends", b), *key, "backends", b))
                for b, t in self.table(table.get("backends"), *key, "backends").items()
            }
            packages = {
                p: freeze(self.no_dates(self.table(t, *key, "packages", p), *key, "packages", p))
                for p, t in self.table(table.get("packages"), *key, "packages").items()
            }
            out[name] = Profile(name, inherits, FrozenDict(backends), FrozenDict(packages))
        for name, profile in out.items():
            chain = [name]
            current = profile
            while current.inherits is not None:
                parent = current.inherits
                if parent not in out:
                    raise self.err(f"profile '{current.name}' inherits from unknown profile '{parent}'",
                                   "profiles", current.name, "inherits",
                                   hint="known profiles: " + ", ".join(sorted(out)))
                if parent in chain:
                    cycle = " -> ".join([*chain, parent])
                    raise self.err(f"profile inheritance cycle: {cycle}", "profiles", name, "inherits",
                                   hint="every custom profile must lead back to dev or release")
                chain.append(parent)
                current = out[parent]
        return out

    # -- package ----------------------------------------------------------------------

    def read_package(self, value: Any, ws_name: str | None, ws_version: str | None) -> PackageDecl:
        table = self.table(value, "package")
        preview = self.ws.get("preview", ())
        if not (isinstance(preview, list) and PREVIEW_BUILD in preview) and preview is not True:
            raise self.err(
                "[package] section is only allowed when the `pixi-build` preview flag is enabled", "package",
                hint="Run `pixi workspace preview add pixi-build` to enable the preview flag",
            )
        name = self.inherit(table, "name", ws_name)
        version = self.inherit(table, "version", ws_version)
        if name is not None and (problem := package_name_problem(name)):
            raise self.err(problem, "package", "name", hint="the package name names its build directories too")
        for field_name in ("description", "license", "homepage", "repository", "documentation", "authors"):
            if field_name in table:
                self.inherit(table, field_name, self.ws.get(field_name))
        build = self.table(table.get("build"), "package", "build")
        if "build" not in table:
            raise self.err("missing field 'build' in [package]", "package",
                           hint='add [package.build] with backend = { name = "pixi-build-python", version = "*" }')
        backend_raw = build.get("backend")
        if isinstance(backend_raw, dict) and backend_raw.get("workspace") is not None:
            name_of = backend_raw.get("name")
            inherited = self.inherited(str(name_of), {"workspace": backend_raw["workspace"]},
                                       ("package", "build", "backend"))
            inherited = {"version": inherited} if isinstance(inherited, str) else dict(inherited)
            backend_raw = {**{k: v for k, v in backend_raw.items() if k != "workspace"}, **inherited}
        if isinstance(backend_raw, dict):
            backend_name = backend_raw.get("name")
            backend_version = backend_raw.get("version", "*")
            backend_channels = backend_raw.get("channels", build.get("channels", []))
        else:
            raise self.err("missing field 'backend'", "package", "build",
                           hint='add backend = { name = "pixi-build-python", version = "*" }')
        if not isinstance(backend_name, str) or not backend_name:
            raise self.err("the backend needs a `name`", "package", "build", "backend")
        if not isinstance(backend_version, str):
            raise self.err("expected a string", "package", "build", "backend", "version")
        backend_channels = self.strings(backend_channels, "package", "build", "backend", "channels")
        if "config" in build and "configuration" in build:
            raise self.err("both `config` and `configuration` are set", "package", "build",
                           hint="`configuration` is the old spelling of `config`; keep one")
        config_key = "config" if "config" in build else "configuration"
        config = self.no_dates(self.table(build.get(config_key), "package", "build", config_key),
                               "package", "build", config_key)
        target_config = []
        for sel, ttable in self.table(build.get("target"), "package", "build", "target").items():
            self.check_selector(sel, ("package", "build", "target", sel))
            ttable = self.table(ttable, "package", "build", "target", sel)
            tkey = "config" if "config" in ttable else "configuration"
            tconfig = self.table(ttable.get(tkey), "package", "build", "target", sel, tkey)
            target_config.append((sel, freeze(self.no_dates(tconfig, "package", "build", "target", sel, tkey))))
        source = build.get("source")
        source_path = None
        if source is not None:
            source = self.table(source, "package", "build", "source")
            source_path = source.get("path")
            if source_path is not None and not isinstance(source_path, str):
                raise self.err("expected a string", "package", "build", "source", "path")
        deps: dict[str, TargetedDeps] = {}
        for kind in ("build-dependencies", "host-dependencies", "run-dependencies"):
            common: list[Dep] = []
            targets: list[tuple[str, tuple[Dep, ...]]] = []
            raw = self.table(table.get(kind), "package", kind)
            plain = {k: v for k, v in raw.items() if not (k.startswith("if(") and isinstance(v, dict) and not _looks_like_spec(v))}
            common.extend(self.read_deps(plain, ("package", kind)))
            for sel, sub in raw.items():
                if sel in plain:
                    continue
                self.check_selector(sel, ("package", kind, sel))
                targets.append((sel, self.read_deps(sub, ("package", kind, sel))))
            deps[kind] = TargetedDeps(tuple(common), tuple(targets))
        if "target" in table:
            if self.declares_schema():
                raise self.err(
                    "[package.target.*] is removed from the manifest schema", "package", "target",
                    hint='use conditional tables such as [package.host-dependencies."if(linux)"]',
                )
            self.warnings.append(
                "[package.target.*] is deprecated: use conditional tables such as "
                '[package.host-dependencies."if(linux)"]'
            )
        for sel, ttable in self.table(table.get("target"), "package", "target").items():
            self.check_selector(sel, ("package", "target", sel))
            ttable = self.table(ttable, "package", "target", sel)
            for kind, sub in ttable.items():
                if kind not in deps:
                    raise self.err(f"unknown field `{kind}`", "package", "target", sel, kind,
                                   hint="expected build-dependencies, host-dependencies or run-dependencies")
                old = deps[kind]
                deps[kind] = TargetedDeps(old.common, (*old.targets, (sel, self.read_deps(sub, ("package", "target", sel, kind)))))
        if version is None and backend_name not in BACKENDS_INFERRING_METADATA:
            raise self.err("missing field 'version' in table", "package",
                           hint='add version = "0.1.0" to [package] (or to the workspace and inherit it)')
        return PackageDecl(
            name=name,
            version=version,
            backend=backend_name,
            backend_version=backend_version,
            backend_channels=backend_channels,
            config=freeze(config),
            target_config=tuple(target_config),
            source=source_path,
            build_deps=deps["build-dependencies"],
            host_deps=deps["host-dependencies"],
            run_deps=deps["run-dependencies"],
        )

    def declares_schema(self) -> bool:
        """A manifest that names pixi's JSON schema opts into its stricter checks."""
        first = self.doc.text.lstrip().splitlines()[:1]
        return "$schema" in self.doc.data or bool(first and first[0].startswith("#:schema"))

    def inherit(self, table: dict[str, Any], field_name: str, ws_value: Any) -> Any:
        value = table.get(field_name)
        if isinstance(value, dict) and "workspace" in value:
            if value["workspace"] is not True:
                raise self.err("`workspace` cannot be false", "package", field_name,
                               hint="By default no fields are inherited from the workspace")
            if ws_value is None:
                raise self.err(f"the workspace does not define a '{field_name}'", "package", field_name,
                               hint=f"add {field_name} to [workspace] or set it here")
            return ws_value
        if value is not None and field_name in ("name", "version") and not isinstance(value, str):
            raise self.err("expected a string or { workspace = true }", "package", field_name)
        return value


# Backends that read name/version from the recipe or pyproject themselves.
BACKENDS_INFERRING_METADATA = (
    "pixi-build-rattler-build",
    "pixi-build-python",
    "pixi-build-rust",
    "pixi-build-ros",
    "pixi-build-mojo",
)

# Configuration keys each known backend accepts (pixi-build-backends' config structs);
# unknown keys are rejected as the backends do.  Other backends are passed through.
_COMMON_CONFIG = ("env", "debug-dir", "extra-input-globs", "compilers", "extra-args")
BACKEND_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "pixi-build-python": (
        *_COMMON_CONFIG, "noarch", "ignore-pyproject-manifest", "ignore-pypi-mapping", "editable",
        "pip-config", "abi3", "pypi-conda-map", "skip-pyc-compilation", "installer",
    ),
    "pixi-build-cmake": (*_COMMON_CONFIG, "build-type"),
    "pixi-build-rattler-build": ("debug-dir", "extra-input-globs", "experimental", "env", "recipe"),
    "pixi-build-rust": (*_COMMON_CONFIG, "ignore-cargo-manifest", "system-env", "binaries"),
}


def check_backend_config(backend: str, config: Mapping[str, Any], err: Callable[..., ManifestError]) -> None:
    allowed = BACKEND_CONFIG_KEYS.get(backend)
    if allowed is None:
        return
    for key in config:
        if key not in allowed:
            raise err(f"failed to parse configuration: unknown field `{key}`", key,
                      hint=f"{backend} accepts " + ", ".join(allowed))


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def pypi_requirements(reqs: list[Any], err: Callable[[str], ManifestError]) -> dict[str, Any]:
    """PEP 508 strings as ``pypi-dependencies`` entries (the whole string, markers included,
    goes to the installer); a dependency group's ``{ include-group = ... }`` is skipped."""
    out: dict[str, Any] = {}
    for req in reqs:
        if isinstance(req, dict) and "include-group" in req:
            continue
        if not isinstance(req, str) or not (match := _REQUIREMENT_NAME.match(req)):
            raise err(f"{req!r} is not a PEP 508 requirement")
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        out[name] = {"requirement": req.strip()}
    return out


def _looks_like_spec(value: dict[str, Any]) -> bool:
    return any(k in value for k in ("version", "build", "path", "git", "url", "channel"))


def _kind(value: Any) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(value), type(value).__name__)
