"""``python`` and ``python_abi`` packages that bridge a real interpreter.

The ``python`` package holds no interpreter: it holds a ``pyvenv.cfg`` and
absolute symlinks to the machine's CPython (notes section 6). An installed
prefix is then a virtual environment of that interpreter: ``sys.prefix`` is
the prefix, its own ``lib/python3.X/site-packages`` is on ``sys.path`` and
the base interpreter's site-packages is not. Headers and the stdlib come from
the base interpreter through ``sysconfig``, so C extensions build against it.

Such a package is only valid on the machine that built it, which is why the
channel is always built locally and never committed.
"""

from __future__ import annotations

import hashlib

from harness.channel.conda_pkg import FileEntry, PackageSpec
from harness.channel.pythons import PythonInfo

BRIDGE_BUILD = "pyenv_0"
PLACEHOLDER = "_harness_python_bridge.txt"


def pyvenv_cfg(py: PythonInfo) -> str:
    """The ``pyvenv.cfg`` that makes the prefix a venv of ``py``."""
    home = py.executable.parent
    return (
        f"home = {home}\n"
        "include-system-site-packages = false\n"
        f"version = {py.version}\n"
        f"executable = {py.executable}\n"
    )


def python_package(py: PythonInfo, subdir: str) -> PackageSpec:
    """The bridging ``python`` package for one interpreter."""
    target = str(py.executable)
    files = [
        FileEntry("pyvenv.cfg", pyvenv_cfg(py).encode()),
        *(
            FileEntry(f"bin/{name}", symlink_to=target)
            for name in ("python", "python3", f"python{py.minor}")
        ),
        # Empty directories are not packaged: keep site-packages with a file.
        FileEntry(
            f"lib/python{py.minor}/site-packages/{PLACEHOLDER}",
            b"site-packages of a harness python bridge; do not remove\n",
        ),
    ]
    key = hashlib.sha256(f"python|{py.version}|{target}|{subdir}".encode()).hexdigest()
    return PackageSpec(
        name="python",
        version=py.version,
        build=BRIDGE_BUILD,
        subdir=subdir,
        files=tuple(files),
        depends=(f"python_abi {py.minor}.* *_{py.cp_tag}",),
        summary=f"Bridge to the CPython {py.version} interpreter at {target} (machine-specific)",
        license="PSF-2.0",
        key=key,
    )


def python_abi_package(py: PythonInfo, subdir: str) -> PackageSpec:
    """``python_abi 3.X 3_cp3X``, shaped like conda-forge's, so recipes that pin it solve."""
    return PackageSpec(
        name="python_abi",
        version=py.minor,
        build=f"3_{py.cp_tag}",
        subdir=subdir,
        constrains=(f"python {py.minor}.*",),
        summary="Metapackage that pins the CPython ABI",
        license="BSD-3-Clause",
        key=f"python_abi|{py.minor}|{subdir}",
    )
