"""Pure-Python wheels -> ``noarch: python`` conda packages.

A wheel is already an installable tree; converting it means moving its files
under ``site-packages/`` (``.data/scripts`` under ``python-scripts/``),
turning ``console_scripts`` into ``noarch: python`` entry points (rattler
writes ``bin/<name>`` with the prefix's python in the shebang), and turning
``Requires-Dist``/``Requires-Python`` into conda ``depends``.

Markers: conda metadata has no markers, so -- as conda-forge's noarch recipes
do -- a marker-conditional dependency is kept unconditionally when it applies to
at least one of the channel's pythons (``tomli; python_version < "3.11"`` stays
when the channel has 3.10), and dropped otherwise (``colorama; sys_platform ==
"win32"``, extras-only dependencies).
"""

from __future__ import annotations

import configparser
import hashlib
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.channel.conda_pkg import FileEntry, PackageSpec
from harness.channel.pythons import PythonInfo
from harness.errors import ChannelError

#: Bump when the conversion output changes, so cached archives are redone.
CONVERTER_VERSION = 1

_WHEEL_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?"
    r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def conda_name(name: str) -> str:
    """PyPI name -> conda name: lowercase, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelMeta:
    """What the harness needs from a wheel without unpacking it."""

    path: Path
    sha256: str
    name: str  # conda-style
    dist_name: str  # as in METADATA
    version: str
    requires_python: str
    requires_dist: tuple[str, ...]
    entry_points: tuple[str, ...]
    summary: str
    license: str

    @property
    def pep440_version(self) -> Version:
        return Version(self.version)

    def python_ok(self, py: PythonInfo) -> bool:
        """Whether ``Requires-Python`` admits ``py``."""
        if not self.requires_python:
            return True
        try:
            return SpecifierSet(self.requires_python).contains(py.version, prereleases=True)
        except InvalidSpecifier:
            return True


def is_pure_tag(file_name: str) -> bool:
    """``py3-none-any``, ``py2.py3-none-any`` (any ``pyN`` tag, ABI none, platform any)."""
    m = _WHEEL_RE.match(file_name)
    if not m:
        return False
    pys = m.group("py").split(".")
    return (
        m.group("abi") == "none"
        and m.group("plat") == "any"
        and all(re.fullmatch(r"py\d*", p) for p in pys)
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dist_info_dir(zf: zipfile.ZipFile, wheel: Path) -> str:
    tops = {n.split("/", 1)[0] for n in zf.namelist() if "/" in n}
    infos = sorted(t for t in tops if t.endswith(".dist-info") and f"{t}/METADATA" in zf.namelist())
    if len(infos) != 1:
        raise ChannelError(
            f"{wheel.name} is not a valid wheel: expected one *.dist-info/METADATA, found {len(infos)}",
            file=wheel,
        )
    return infos[0]


def _entry_points(text: str) -> tuple[str, ...]:
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    out: list[str] = []
    for section in ("console_scripts", "gui_scripts"):
        if not cp.has_section(section):
            continue
        for name, value in cp.items(section):
            target = value.split("[", 1)[0].strip()  # drop "[extra]" suffixes
            if ":" in target:
                out.append(f"{name.strip()} = {target}")
    return tuple(sorted(set(out)))


def read_wheel(path: Path, *, require_pure: bool = True) -> WheelMeta:
    """Read a wheel's metadata; refuse anything that is not pure Python."""
    path = Path(path)
    if not path.is_file():
        raise ChannelError(f"wheel not found: {path}", file=path, hint="check the --wheel path")
    if require_pure and not is_pure_tag(path.name):
        raise ChannelError(
            f"{path.name} is not a pure-Python wheel (py3-none-any or py2.py3-none-any); "
            "the offline channel can only convert pure wheels to noarch: python packages",
            file=path,
            hint="build the package from source in a cell instead, or pass a *-none-any.whl",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            info = _dist_info_dir(zf, path)
            headers = BytesHeaderParser().parsebytes(zf.read(f"{info}/METADATA"))
            ep_name = f"{info}/entry_points.txt"
            eps = (
                _entry_points(zf.read(ep_name).decode("utf-8")) if ep_name in zf.namelist() else ()
            )
    except (zipfile.BadZipFile, OSError, KeyError, UnicodeDecodeError, configparser.Error) as exc:
        raise ChannelError(f"cannot read wheel {path.name}: {exc}", file=path) from None
    dist_name = headers.get("Name") or ""
    version = headers.get("Version") or ""
    try:
        Version(version)
    except InvalidVersion:
        raise ChannelError(
            f"{path.name}: invalid Version {version!r} in METADATA", file=path
        ) from None
    if not dist_name:
        raise ChannelError(f"{path.name}: METADATA has no Name", file=path)
    license_ = headers.get("License-Expression") or headers.get("License") or ""
    if "\n" in license_ or len(license_) > 100:
        license_ = ""  # some wheels paste the whole licence text here
    return WheelMeta(
        path=path,
        sha256=_sha256(path),
        name=conda_name(dist_name),
        dist_name=dist_name,
        version=version,
        requires_python=(headers.get("Requires-Python") or "").strip(),
        requires_dist=tuple(headers.get_all("Requires-Dist") or ()),
        entry_points=eps,
        summary=(headers.get("Summary") or "").strip(),
        license=license_.strip(),
    )


def marker_env(py: PythonInfo, extra: str = "") -> dict[str, str]:
    """PEP 508 marker environment of ``py`` on Linux (the channel's platform)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": py.version,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": py.version,
        "python_version": py.minor,
        "sys_platform": "linux",
        "extra": extra,
    }


def marker_applies(marker: Marker | None, py: PythonInfo, extras: Iterable[str] = ()) -> bool:
    """Whether a requirement with ``marker`` is needed by ``py`` (with ``extras``)."""
    if marker is None:
        return True
    for extra in ("", *extras):
        try:
            if marker.evaluate(marker_env(py, extra)):
                return True
        except (InvalidMarker, ValueError, TypeError):
            return False
    return False


def conda_version_spec(spec: SpecifierSet) -> str:
    """PEP 440 specifiers -> a conda version spec (``>=1.0,<2``, ``1.0.*``)."""
    parts: list[str] = []
    for s in sorted(spec, key=str):
        op, ver = s.operator, s.version
        if op == "===":
            op = "=="
        if op == "==" and ver.endswith(".*"):
            parts.append(ver)
        else:
            parts.append(f"{op}{ver}")
    return ",".join(parts)


def python_depend(requires_python: str) -> str:
    """``python >=<lower bound>`` (plus upper bounds) from ``Requires-Python``."""
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return "python"
    parts: list[str] = []
    for s in sorted(spec, key=str):
        ver = s.version.removesuffix(".*")
        if s.operator in (">=", ">", "<", "<="):
            parts.append(f"{s.operator}{ver}")
        elif s.operator == "~=":
            parts.append(f">={ver}")
        elif s.operator == "==" and s.version.endswith(".*"):
            parts.append(f"{ver}.*")
    return "python " + ",".join(parts) if parts else "python"


def conda_depends(meta: WheelMeta, pythons: Sequence[PythonInfo]) -> tuple[str, ...]:
    """``Requires-Dist`` -> conda ``depends`` for the given channel pythons."""
    relevant = [py for py in pythons if meta.python_ok(py)] or list(pythons)
    deps: dict[str, list[str]] = {}
    for line in meta.requires_dist:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if not any(marker_applies(req.marker, py) for py in relevant):
            continue
        name = conda_name(req.name)
        spec = conda_version_spec(req.specifier)
        bucket = deps.setdefault(name, [])
        if spec and spec not in bucket:
            bucket.append(spec)
    out = [python_depend(meta.requires_python)]
    for name in sorted(deps):
        specs = deps[name]
        out.append(f"{name} {','.join(specs)}" if specs else name)
    return tuple(out)


def _payload(zf: zipfile.ZipFile, meta: WheelMeta) -> list[FileEntry]:
    info = _dist_info_dir(zf, meta.path)
    data_dir = info.removesuffix(".dist-info") + ".data"
    files: list[FileEntry] = []
    record_extra: list[str] = []
    for zi in zf.infolist():
        name = zi.filename
        if zi.is_dir():
            continue
        if name.startswith("/") or ".." in name.split("/"):
            raise ChannelError(f"{meta.path.name}: unsafe path {name!r} in wheel", file=meta.path)
        data = zf.read(zi)
        executable = bool((zi.external_attr >> 16) & 0o111)
        if name.startswith(data_dir + "/"):
            _, kind, rest = name.split("/", 2) if name.count("/") >= 2 else (name, "", "")
            if kind in ("purelib", "platlib"):
                files.append(FileEntry(f"site-packages/{rest}", data, executable))
            elif kind == "scripts":
                if data.startswith(b"#!python"):
                    data = b"#!/usr/bin/env python" + data[len(b"#!python") :].lstrip(b"w")
                files.append(FileEntry(f"python-scripts/{rest}", data, True))
            elif kind == "data":
                files.append(FileEntry(rest, data, executable))
            # "headers" are not used by pure packages; skip them.
            continue
        if name == f"{info}/RECORD":
            record_extra.append(data.decode("utf-8", "replace").rstrip("\n"))
            continue
        if name == f"{info}/INSTALLER":
            continue
        files.append(FileEntry(f"site-packages/{name}", data, executable))
    files.append(FileEntry(f"site-packages/{info}/INSTALLER", b"conda\n"))
    record = "\n".join([*record_extra, f"{info}/INSTALLER,,"]) + "\n"
    files.append(FileEntry(f"site-packages/{info}/RECORD", record.encode()))
    return files


def conversion_key(meta: WheelMeta, pythons: Sequence[PythonInfo], build_number: int = 0) -> str:
    """Everything the converted archive depends on (the wheel, the pythons' minors)."""
    minors = ",".join(sorted({py.minor for py in pythons}))
    text = f"wheel|{CONVERTER_VERSION}|{meta.sha256}|{minors}|{build_number}"
    return hashlib.sha256(text.encode()).hexdigest()


def wheel_build_string(meta: WheelMeta, build_number: int = 0) -> str:
    """Content-addressed build string: two different wheels of one version never collide."""
    return f"pyh{meta.sha256[:7]}_{build_number}"


def wheel_file_name(meta: WheelMeta, build_number: int = 0) -> str:
    """The archive name :func:`wheel_package_spec` will produce, without reading the payload."""
    return f"{meta.name}-{meta.version}-{wheel_build_string(meta, build_number)}.tar.bz2"


def wheel_package_spec(
    meta: WheelMeta, pythons: Sequence[PythonInfo], *, build_number: int = 0
) -> PackageSpec:
    """The ``noarch: python`` package for a wheel (reads the payload).

    ``build_number`` 1 is used for wheels passed explicitly, so that the solver
    prefers them over a downloaded wheel of the same version.
    """
    with zipfile.ZipFile(meta.path) as zf:
        files = _payload(zf, meta)
    seen: set[str] = set()
    for entry in files:
        if entry.path in seen:
            raise ChannelError(f"{meta.path.name}: duplicate path {entry.path!r}", file=meta.path)
        seen.add(entry.path)
    return PackageSpec(
        name=meta.name,
        version=meta.version,
        build=wheel_build_string(meta, build_number),
        build_number=build_number,
        subdir="noarch",
        files=tuple(files),
        depends=conda_depends(meta, pythons),
        noarch="python",
        entry_points=meta.entry_points,
        summary=meta.summary or None,
        license=meta.license or None,
        key=conversion_key(meta, pythons, build_number),
    )
