"""``pypi-dependencies`` installed into the test prefix with uv, after the conda packages.

pixi installs PyPI packages on top of the solved conda environment, and the
conda ``python`` must already be there.  The harness does the same with
``uv pip install --python <prefix>/bin/python`` (uv ships as a Python package:
its binary comes from :func:`uv.find_uv_bin`).  A marker in ``conda-meta``
records the hash of the requested set *and* of the conda install under it;
the conda stage deletes that marker whenever it touches the prefix, so a
reinstalled prefix always gets its PyPI packages back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import faults
from harness.cache import atomic_write_json, file_sha256, read_json
from harness.cell import digest
from harness.errors import InstallError

MARKER = "harness-pypi"
_OPERATORS = ("==", "!=", ">=", "<=", "~=", ">", "<", "===")
_GIT_REFS = ("rev", "tag", "branch")
_KNOWN_KEYS = {
    "version",
    "extras",
    "path",
    "editable",
    "git",
    "url",
    "subdirectory",
    "index",
    "requirement",
    *_GIT_REFS,
}


@dataclass(frozen=True)
class PypiRequirement:
    """One PyPI dependency as uv arguments, plus what its install depends on."""

    name: str
    args: tuple[str, ...]  # ("pkg>=1",) or ("-e", "/abs/dir")
    direct: bool  # a path/git/url reference: reinstalled when its content hash changes
    fingerprint: str | None = None  # content hash of a local path, when there is one


def _version(name: str, spec: str) -> str:
    spec = spec.strip()
    if spec in ("", "*"):
        return ""
    if spec.startswith(_OPERATORS) or "," in spec:
        return spec
    return f"=={spec}"  # pixi reads a bare version as an exact pin


def _tree_fingerprint(path: Path) -> str:
    """Names, sizes and mtimes under ``path`` (not contents: a source tree can be large)."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "build")
        )
        for name in sorted(files):
            full = Path(root) / name
            with contextlib.suppress(OSError):
                st = full.stat()
                entries.append((str(full.relative_to(path)), st.st_size, st.st_mtime_ns))
    return digest(entries)


def requirement(
    name: str, spec: Any, root: Path, *, manifest: Path | None = None
) -> PypiRequirement:
    """Translate one pixi ``pypi-dependencies`` entry into uv arguments."""
    key = ("pypi-dependencies", name)
    if isinstance(spec, str):
        return PypiRequirement(name, (name + _version(name, spec),), direct=False)
    if not isinstance(spec, Mapping):
        raise InstallError(
            f"expected a version string or a table, found {type(spec).__name__}",
            file=manifest,
            key=key,
        )
    unknown = sorted(set(spec) - _KNOWN_KEYS)
    if unknown:
        raise InstallError(
            f"unsupported keys {', '.join(unknown)}",
            file=manifest,
            key=key,
            hint=f"supported: {', '.join(sorted(_KNOWN_KEYS))}",
        )
    if isinstance(spec.get("requirement"), str):  # a PEP 508 string from pyproject.toml, as written
        return PypiRequirement(name, (spec["requirement"],), direct=" @ " in spec["requirement"])
    extras = spec.get("extras") or []
    head = name + (f"[{','.join(extras)}]" if extras else "")
    if "path" in spec:
        path = Path(str(spec["path"])).expanduser()
        path = path if path.is_absolute() else (root / path)
        path = Path(os.path.normpath(path))
        if not path.exists():
            raise InstallError(f"path {path} does not exist", file=manifest, key=key)
        fingerprint = file_sha256(path) if path.is_file() else _tree_fingerprint(path)
        if spec.get("editable"):
            target = str(path) + (f"[{','.join(extras)}]" if extras else "")
            return PypiRequirement(name, ("-e", target), direct=True, fingerprint=None)
        return PypiRequirement(
            name, (f"{head} @ {path.as_uri()}",), direct=True, fingerprint=fingerprint
        )
    if "git" in spec:
        url = str(spec["git"])
        ref = next((str(spec[r]) for r in _GIT_REFS if r in spec), None)
        text = f"{head} @ git+{url}" + (f"@{ref}" if ref else "")
        if spec.get("subdirectory"):
            text += f"#subdirectory={spec['subdirectory']}"
        return PypiRequirement(name, (text,), direct=True)
    if "url" in spec:
        return PypiRequirement(name, (f"{head} @ {spec['url']}",), direct=True)
    version = spec.get("version", "*")
    if not isinstance(version, str):
        raise InstallError("`version` must be a string", file=manifest, key=key)
    return PypiRequirement(name, (head + _version(name, version),), direct=False)


def requirements(
    dependencies: Mapping[str, Any], root: Path, *, manifest: Path | None = None
) -> tuple[PypiRequirement, ...]:
    return tuple(
        requirement(n, s, root, manifest=manifest) for n, s in sorted(dependencies.items())
    )


def python_of(prefix: Path) -> Path:
    prefix = Path(prefix)
    return prefix / "python.exe" if sys.platform == "win32" else prefix / "bin" / "python"


def pypi_hash(reqs: tuple[PypiRequirement, ...], conda_hash: str) -> str:
    """The input hash of the PyPI stage: the requests, local contents, and the conda prefix."""
    return digest(
        {
            "conda": conda_hash,
            "requirements": [[r.name, list(r.args), r.fingerprint] for r in reqs],
        }
    )


def pypi_current(prefix: Path, wanted_hash: str) -> bool:
    marker = read_json(Path(prefix) / "conda-meta" / MARKER)
    return isinstance(marker, dict) and marker.get("hash") == wanted_hash


def _uv(args: list[str], *, what: str) -> None:
    from uv import find_uv_bin

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")
    }
    cmd = [find_uv_bin(), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-3000:]
        raise InstallError(
            f"{what} failed (uv exited {proc.returncode})\n  command: {' '.join(cmd)}\n{tail}",
            hint="check the pypi-dependencies of the cell's environment; uv's message is above",
        )


def install_pypi(
    prefix: Path,
    reqs: tuple[PypiRequirement, ...],
    *,
    conda_hash: str,
    context: str = "",
) -> bool:
    """Install ``reqs`` into ``prefix``; returns ``False`` when the recorded set already matches."""
    prefix = Path(prefix)
    wanted = pypi_hash(reqs, conda_hash)
    marker_path = prefix / "conda-meta" / MARKER
    old = read_json(marker_path)
    if isinstance(old, dict) and old.get("hash") == wanted:
        return False
    python = python_of(prefix)
    if not python.exists():
        raise InstallError(
            f"{context or prefix}: pypi-dependencies need a Python in the environment, "
            f"but {python} does not exist",
            hint="add `python` to the environment's [dependencies]",
        )
    with contextlib.suppress(FileNotFoundError):
        marker_path.unlink()
    old_names = set(old.get("names", [])) if isinstance(old, dict) else set()
    removed = sorted(old_names - {r.name for r in reqs})
    if removed:
        _uv(
            ["pip", "uninstall", "--python", str(python), *removed],
            what=f"{context}: uv pip uninstall",
        )
    if reqs:
        args = ["pip", "install", "--python", str(python)]
        changed_direct = [r.name for r in reqs if r.direct]
        for name in changed_direct:
            args += ["--reinstall-package", name]
        for req in reqs:
            args += list(req.args)
        _uv(args, what=f"{context}: uv pip install")
    faults.point("pypi.installed")
    atomic_write_json(
        marker_path,
        {"hash": wanted, "names": sorted(r.name for r in reqs), "finished": time.time()},
    )
    return True
