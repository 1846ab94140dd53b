"""Unpack a wheel into a staging directory laid out as a conda prefix, without pip.

A build produces a wheel; a conda package needs the files where a Python in a
prefix finds them.  Two layouts:

* **prefix layout** (compiled wheels, or ``noarch = false``): ``purelib`` and
  ``platlib`` go to ``lib/pythonX.Y/site-packages/``, ``.data/scripts`` to
  ``bin/``, ``.data/headers`` to ``include/``, ``.data/data`` to the prefix
  root, and every ``console_scripts``/``gui_scripts`` entry point becomes an
  executable ``bin/<name>`` with ``#!/usr/bin/env pythonX.Y``.  The shebang
  names the interpreter by version rather than by path because the package is
  assembled away from the prefix it will be installed into.
* **noarch: python layout** (pure wheels): ``site-packages/`` and
  ``python-scripts/``, the layout conda installers relocate into whichever
  Python the target prefix has; entry points are not written as files but
  declared in the package metadata, as :mod:`harness.channel.wheels` does for
  the offline channel.

pip is not used: it would need to run inside the host prefix (which may not
have it), would write into that prefix, and its ``--prefix``/``--target``
schemes depend on the interpreter's sysconfig.  A wheel is a zip file with a
fixed layout, so the standard library is enough.

``RECORD`` is rewritten to describe the installed files (paths relative to
``site-packages``, hashes of the files as written, shebang rewrites
included) and ``INSTALLER`` says ``variant-harness``; signature files of the
original ``RECORD`` are dropped, since they no longer match.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from harness.channel.wheels import is_pure_tag, read_wheel
from harness.errors import BuildError, ChannelError

#: Written to ``*.dist-info/INSTALLER`` (PEP 376: who installed the distribution).
INSTALLER = "variant-harness"

#: File name endings of compiled code: a wheel holding any of them is not pure.
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")

#: ``.dist-info`` files that describe the wheel's own RECORD and are replaced or dropped.
_DROPPED = ("RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER")

#: From ``site-packages`` (``lib/pythonX.Y/site-packages``) up to the prefix root.
_UP = "../../../"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class WheelContents:
    """What the harness decides on before unpacking a wheel."""

    path: Path
    dist_info: str  # "name-1.0.dist-info"
    name: str  # distribution name as in METADATA
    version: str
    root_is_purelib: bool
    pure: bool  # py-none-any tag, purelib root, no platlib, no compiled files
    entry_points: tuple[str, ...]  # "name = module:attr", console and gui scripts
    top_level: tuple[str, ...]  # importable top-level modules and packages

    @property
    def data_dir(self) -> str:
        return self.dist_info.removesuffix(".dist-info") + ".data"


@dataclass(frozen=True)
class StagedFile:
    """One file written by :func:`install_wheel` or :func:`stage_noarch_python`."""

    path: str  # relative to the staging directory
    record_path: str  # as RECORD lists it: relative to site-packages
    executable: bool


def _error(wheel: Path, message: str, hint: str | None = None) -> BuildError:
    return BuildError(f"{wheel.name}: {message}", file=wheel, hint=hint)


def _dist_info(names: Iterable[str], wheel: Path) -> str:
    names = set(names)
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    infos = sorted(t for t in tops if t.endswith(".dist-info") and f"{t}/METADATA" in names)
    if len(infos) != 1:
        raise _error(wheel, f"expected one *.dist-info/METADATA in the wheel, found {len(infos)}")
    return infos[0]


def _module_name(file_name: str) -> str | None:
    """``foo.py`` -> ``foo``; ``foo.cpython-312-x86_64-linux-gnu.so`` -> ``foo``; else None."""
    if file_name.endswith(".py"):
        stem = file_name[: -len(".py")]
    elif file_name.endswith((".so", ".pyd")):
        stem = file_name.split(".", 1)[0]
    else:
        return None
    return stem if _IDENTIFIER.match(stem) else None


def top_level_names(names: Iterable[str], dist_info: str, top_level_txt: str = "") -> tuple[str, ...]:
    """The importable top-level names a wheel installs into ``site-packages``.

    A name counts when the wheel really has it: a directory holding Python or
    extension modules (a package, namespace packages included), or a module
    file.  ``top_level.txt`` (setuptools writes it) narrows that set when it
    is present, because it leaves out auxiliary directories a wheel may carry;
    names it lists that the wheel does not hold are ignored, since importing
    them could only fail.
    """
    data_dir = dist_info.removesuffix(".dist-info") + ".data"
    present: set[str] = set()
    for name in names:
        parts = name.split("/")
        if parts[0] == data_dir:
            if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                continue
            parts = parts[2:]
        elif parts[0].endswith((".dist-info", ".data")):
            continue
        if not parts or parts[0] == "__pycache__" or not parts[-1]:
            continue
        if len(parts) == 1:
            module = _module_name(parts[0])
            if module:
                present.add(module)
        elif _IDENTIFIER.match(parts[0]) and _module_name(parts[-1]) and "__pycache__" not in parts:
            present.add(parts[0])
    listed = {line.strip() for line in top_level_txt.splitlines() if line.strip()}
    chosen = present & listed or present
    return tuple(sorted(chosen))


def inspect_wheel(wheel: Path) -> WheelContents:
    """Read a wheel's metadata, purity, entry points and top-level names."""
    wheel = Path(wheel)
    try:
        meta = read_wheel(wheel, require_pure=False)
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            info = _dist_info(names, wheel)
            headers = BytesHeaderParser().parsebytes(zf.read(f"{info}/WHEEL"))
            top_txt = (
                zf.read(f"{info}/top_level.txt").decode("utf-8", "replace")
                if f"{info}/top_level.txt" in names
                else ""
            )
    except ChannelError as exc:
        raise BuildError(exc.message, file=wheel, hint=exc.hint) from None
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise _error(wheel, f"cannot read the wheel: {exc}") from None
    root_is_purelib = (headers.get("Root-Is-Purelib") or "").strip().lower() == "true"
    data_dir = info.removesuffix(".dist-info") + ".data"
    has_platlib = any(n.startswith(f"{data_dir}/platlib/") for n in names)
    has_native = any(n.lower().endswith(NATIVE_SUFFIXES) for n in names)
    pure = root_is_purelib and is_pure_tag(wheel.name) and not has_platlib and not has_native
    return WheelContents(
        path=wheel,
        dist_info=info,
        name=meta.dist_name,
        version=meta.version,
        root_is_purelib=root_is_purelib,
        pure=pure,
        entry_points=meta.entry_points,
        top_level=top_level_names(names, info, top_txt),
    )


def _rewrite_shebang(data: bytes, interpreter: str) -> bytes:
    """``#!python`` / ``#!pythonw`` (the wheel spec's placeholder) -> ``#!/usr/bin/env <interpreter>``."""
    if not data.startswith(b"#!python"):
        return data
    _, sep, rest = data.partition(b"\n")
    return f"#!/usr/bin/env {interpreter}".encode() + sep + rest


def entry_point_script(entry_point: str, interpreter: str) -> str:
    """The launcher for ``name = module:attr.sub`` (what pip writes, with a portable shebang)."""
    _, _, target = entry_point.partition("=")
    module, _, attr = target.strip().partition(":")
    head = attr.split(".", 1)[0]
    return (
        f"#!/usr/bin/env {interpreter}\n"
        "# -*- coding: utf-8 -*-\n"
        "import re\n"
        "import sys\n"
        f"from {module.strip()} import {head}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({attr.strip()}())\n"
    )


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


class _Writer:
    """Writes staged files, refusing duplicates, and remembers them for RECORD."""

    def __init__(self, wheel: Path, dest: Path) -> None:
        self.wheel = wheel
        self.dest = dest
        self.files: list[StagedFile] = []
        self.record: list[tuple[str, str, str]] = []
        self._seen: set[str] = set()

    def write(self, rel: str, record_path: str, data: bytes, executable: bool) -> None:
        if rel in self._seen:
            raise _error(self.wheel, f"two wheel members install to the same path {rel!r}")
        self._seen.add(rel)
        target = self.dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, 0o755 if executable else 0o644)
        self.files.append(StagedFile(rel, record_path, executable))
        self.record.append((record_path, _record_hash(data), str(len(data))))


def _unpack(
    contents: WheelContents,
    dest: Path,
    *,
    site_packages: str,
    scripts: str,
    interpreter: str,
    write_entry_points: bool,
) -> tuple[StagedFile, ...]:
    wheel = contents.path
    info, data_dir = contents.dist_info, contents.data_dir
    out = _Writer(wheel, dest)
    with zipfile.ZipFile(wheel) as zf:
        for zi in zf.infolist():
            name = zi.filename
            if zi.is_dir():
                continue
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                raise _error(wheel, f"unsafe path {name!r} in the wheel")
            if name.startswith(f"{info}/") and name[len(info) + 1 :] in _DROPPED:
                continue
            data = zf.read(zi)
            executable = bool((zi.external_attr >> 16) & 0o111)
            if not name.startswith(f"{data_dir}/"):
                out.write(f"{site_packages}/{name}", name, data, executable)
                continue
            parts = name.split("/", 2)
            if len(parts) < 3 or not parts[2]:
                raise _error(wheel, f"file {name!r} is outside the .data scheme directories")
            kind, rest = parts[1], parts[2]
            if kind in ("purelib", "platlib"):
                out.write(f"{site_packages}/{rest}", rest, data, executable)
            elif kind == "scripts":
                data = _rewrite_shebang(data, interpreter)
                out.write(f"{scripts}/{rest}", f"{_UP}bin/{rest}", data, True)
            elif kind == "headers":
                out.write(f"include/{rest}", f"{_UP}include/{rest}", data, executable)
            elif kind == "data":
                out.write(rest, f"{_UP}{rest}", data, executable)
            else:
                raise _error(
                    wheel,
                    f"unknown wheel scheme directory {kind!r} in {name!r}",
                    hint="a wheel's .data directory holds purelib, platlib, scripts, headers or data",
                )
    if write_entry_points:
        for entry_point in contents.entry_points:
            script = entry_point.split("=", 1)[0].strip()
            data = entry_point_script(entry_point, interpreter).encode()
            out.write(f"{scripts}/{script}", f"{_UP}bin/{script}", data, True)
    installer = f"{INSTALLER}\n".encode()
    out.write(f"{site_packages}/{info}/INSTALLER", f"{info}/INSTALLER", installer, False)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in sorted(out.record):
        writer.writerow(row)
    writer.writerow((f"{info}/RECORD", "", ""))
    record = buf.getvalue().encode()
    target = dest / site_packages / info / "RECORD"
    target.write_bytes(record)
    os.chmod(target, 0o644)
    out.files.append(StagedFile(f"{site_packages}/{info}/RECORD", f"{info}/RECORD", False))
    return tuple(out.files)


def install_wheel(contents: WheelContents, prefix: Path, *, python_version: str) -> tuple[StagedFile, ...]:
    """Unpack ``contents`` into ``prefix`` in the prefix layout for Python ``python_version`` ("3.12")."""
    return _unpack(
        contents,
        Path(prefix),
        site_packages=f"lib/python{python_version}/site-packages",
        scripts="bin",
        interpreter=f"python{python_version}",
        write_entry_points=True,
    )


def stage_noarch_python(contents: WheelContents, dest: Path) -> tuple[StagedFile, ...]:
    """Unpack a pure wheel into ``dest`` in the ``noarch: python`` layout (entry points not written)."""
    return _unpack(
        contents,
        Path(dest),
        site_packages="site-packages",
        scripts="python-scripts",
        interpreter="python",
        write_entry_points=False,
    )


def python_abi_depend(python_version: str, abiflags: str = "") -> str:
    """The ``python_abi`` pin of a compiled package (``python_abi 3.12.* *_cp312``; ``t`` for free-threaded)."""
    major, _, minor = python_version.partition(".")
    suffix = "t" if "t" in abiflags else ""
    return f"python_abi {python_version}.* *_cp{major}{minor}{suffix}"

