"""The build backends, under the names pixi gives them in ``[package.build] backend``.

Imported lazily: building one cell loads only its own backend.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from harness.build.base import Backend
from harness.errors import BuildError

#: backend name -> "module:class"
BACKENDS: dict[str, str] = {
    "pixi-build-python": "harness.build.backends.python:PythonBackend",
    "pixi-build-cmake": "harness.build.backends.cmake:CMakeBackend",
    "pixi-build-rattler-build": "harness.build.backends.rattler_build:RattlerBuildBackend",
    "harness-build-script": "harness.build.backends.script:ScriptBackend",
}


def get_backend(name: str, *, manifest: Path | None = None) -> Backend:
    """The backend registered as ``name``; a :class:`BuildError` listing the known ones otherwise."""
    target = BACKENDS.get(name)
    if target is None:
        raise BuildError(
            f"unknown build backend {name!r}",
            file=manifest,
            key="package.build.backend",
            hint="known backends: " + ", ".join(sorted(BACKENDS)),
        )
    module, _, attr = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), attr)()
    return backend
