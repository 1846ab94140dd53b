"""Build pointops with its C extension ``pointops._core``.

Like a real CUDA package, the build looks for its CUDA toolkit in the *host*
environment: the ``cuda-version`` conda package recorded in the running
interpreter's prefix (``sys.prefix`` is the host prefix when the build runs with
the host's Python).  The version found is compiled into the extension, so an
environment that receives a build made for another CUDA version can tell.

This script only reads: it writes nothing into the source tree itself.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

from setuptools import Extension, setup

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


def cuda_version_in_prefix(prefix: str) -> str | None:
    """The version of the ``cuda-version`` package installed in ``prefix``, if any."""
    found = []
    for path in sorted(glob.glob(os.path.join(prefix, "conda-meta", "cuda-version-*.json"))):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("name") == "cuda-version":
            found.append(str(record.get("version", "")))
    if len(found) > 1:
        sys.exit(f"pointops: several cuda-version packages in {prefix}: {', '.join(found)}")
    return found[0] if found else None


def cuda_version() -> str:
    """The host prefix's ``cuda-version``, else ``$POINTOPS_CUDA_VERSION``, else ``none``."""
    version = cuda_version_in_prefix(sys.prefix) or os.environ.get("POINTOPS_CUDA_VERSION") or "none"
    if not _VERSION.match(version):
        sys.exit(f"pointops: {version!r} is not a CUDA version (expected something like 13.0)")
    return version


def build_jobs() -> int | None:
    """``$POINTOPS_BUILD_JOBS`` as a job count; an unexpanded value such as ``$(nproc)`` is an error."""
    raw = os.environ.get("POINTOPS_BUILD_JOBS")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) < 1:
        sys.exit(f"pointops: POINTOPS_BUILD_JOBS must be a positive integer, got {raw!r}")
    return int(raw)


CUDA_VERSION = cuda_version()
JOBS = build_jobs()
print(f"pointops: building for Python {sys.version_info[0]}.{sys.version_info[1]}, "
      f"CUDA {CUDA_VERSION} (prefix {sys.prefix})")

setup(
    ext_modules=[
        Extension(
            "pointops._core",
            sources=["src/pointops/_core.c"],
            define_macros=[("POINTOPS_CUDA_VERSION", f'"{CUDA_VERSION}"')],
        ),
    ],
    options={"build_ext": {"parallel": JOBS}} if JOBS else {},
)
