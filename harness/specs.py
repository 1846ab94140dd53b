"""Dependency specifications as pixi writes them, and their conda MatchSpec form.

pixi accepts ``name = "1.2.*"`` and tables such as ``{ version = ">=1", build =
"py*", channel = "x" }`` or source specs (``path``/``git``/``url``).  The solver
wants strict MatchSpec strings, so normalisation lives here, in one place.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rattler import MatchSpec, Version, VersionSpec
from rattler.exceptions import InvalidVersionSpecError

SOURCE_KEYS = ("path", "git", "url")
# conda's package names (rattler's ``PackageName``): a name is also a directory
# name under the cache root and in every prefix, so nothing else gets through.
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_ARCHIVE_SUFFIXES = (".conda", ".tar.bz2")


@dataclass(frozen=True, order=True)
class Dep:
    """One dependency of one role: ``python 3.12.*``, ``cupy {path = "."}``..."""

    name: str
    version: str = "*"
    build: str | None = None
    channel: str | None = None
    source: str | None = None  # "path:." / "git:https://..." for source packages
    when: str | None = None

    @property
    def is_source(self) -> bool:
        return self.source is not None

    def matchspec(self) -> str:
        """Strict MatchSpec text for the solver (``name ==1.2``, ``name 1.2.* py*``)."""
        version = normalize_version(self.version)
        text = self.name
        if self.channel and not self.channel.startswith(("path:", "url:")):
            text = f"{self.channel}::{text}"  # channel-restricted: the solve maps it to its URL
        if version != "*" or self.build:
            text += f" {version}"
        if self.build:
            text += f" {self.build}"
        return text

    def describe(self) -> str:
        if self.source:
            return f"{self.name} ({self.source})"
        return self.matchspec()


def normalize_version(spec: str) -> str:
    """Canonical version spec; bare versions mean ``==`` as rattler's lenient parser says."""
    spec = spec.strip()
    if spec in ("", "*"):
        return "*"
    try:
        return str(VersionSpec(spec, strict=False))
    except InvalidVersionSpecError:
        return spec


def valid_version(spec: str) -> str | None:
    """``None`` when ``spec`` parses, else the parser's complaint."""
    try:
        VersionSpec(spec.strip() or "*", strict=False)
    except InvalidVersionSpecError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=4096)
def variant_spec(value: str) -> str:
    """A build-variant value as a version spec: ``3.12`` pins ``3.12.*`` (conda-build's reading)."""
    value = str(value).strip()
    if not value or value == "*":
        return "*"
    if value[0].isdigit() and not any(c in value for c in "*<>=!~|, "):
        return f"{value}.*"
    return normalize_version(value)


def package_name_problem(name: str) -> str | None:
    """``None`` when ``name`` is a valid conda package name, else why not."""
    if not _PACKAGE_NAME.match(name) or name in (".", ".."):
        return (f"{name!r} is not a valid package name: package names use only "
                "letters, digits, '-', '_' and '.'")
    return None


def version_problem(text: str) -> str | None:
    """``None`` when ``text`` is a version (``13``, ``2.28``), else why not (system requirements)."""
    try:
        Version(text.strip())
    except Exception as exc:  # rattler's InvalidVersionError and friends
        return f"{text!r} is not a version: {exc}"
    return None


def parse_dep(name: str, value: Any) -> Dep | str:
    """A manifest dependency value as a :class:`Dep`, or a message saying what is wrong."""
    if isinstance(value, str):
        return _parse_version_dep(name, value)
    return _checked_dep(name, value)


@lru_cache(maxsize=4096)
def _parse_version_dep(name: str, value: str) -> Dep | str:
    """``name = "spec"``, memoised: a matrix repeats the same pins in every cell (Dep is frozen)."""
    return _checked_dep(name, value)


def _checked_dep(name: str, value: Any) -> Dep | str:
    problem = package_name_problem(name)
    if problem:
        return problem
    dep = _parse_dep(name, value)
    if isinstance(dep, Dep) and not dep.is_source:
        if problem := valid_version(dep.version):
            return f"invalid version spec '{dep.version}': {problem}"
        if problem := matchspec_problem(dep.matchspec()):
            return f"'{dep.matchspec()}' is not a valid MatchSpec: {problem}"
    return dep


@lru_cache(maxsize=4096)
def matchspec_problem(text: str) -> str | None:
    """``None`` when the solver can read ``text``; memoised, as a matrix repeats its pins per cell."""
    try:
        MatchSpec(text)
    except Exception as exc:  # InvalidMatchSpecError, and rattler's parse errors
        return str(exc)
    return None


def _parse_dep(name: str, value: Any) -> Dep | str:
    if isinstance(value, str):
        return Dep(name=name, version=value.strip() or "*")
    if not isinstance(value, dict):
        return f"expected a version string or a table, found {type(value).__name__}"
    for key in SOURCE_KEYS:
        if key in value:
            target = value[key]
            if not isinstance(target, str):
                return f"`{key}` must be a string"
            if key in ("path", "url") and target.endswith(_ARCHIVE_SUFFIXES):
                return Dep(name=name, source=None, version="*", channel=f"{key}:{target}")
            return Dep(name=name, source=f"{key}:{target}")
    version = value.get("version", "*")
    if not isinstance(version, str):
        return "`version` must be a string"
    build = value.get("build")
    channel = value.get("channel")
    when = value.get("when")
    for label, item in (("build", build), ("channel", channel), ("when", when)):
        if item is not None and not isinstance(item, str):
            return f"`{label}` must be a string"
    return Dep(name=name, version=version.strip() or "*", build=build, channel=channel, when=when)


_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_cutoff(text: str) -> datetime.datetime | datetime.timedelta:
    """pixi's ``exclude-newer``: an RFC 3339 time, a date (the start of the *next* day, UTC)
    or a duration before now (``7d``, ``1h30m``).  Raises ``ValueError`` for anything else."""
    text = text.strip()
    if re.fullmatch(r"(\d+\s*[wdhms]\s*)+", text):
        return datetime.timedelta(seconds=sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(text)))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
        return day + datetime.timedelta(days=1)
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
