"""Call a PEP 517 backend's ``build_wheel`` inside the host prefix's Python.

The harness builds with the host prefix's own interpreter and without build
isolation: the host prefix was solved to contain the build backend (setuptools,
scikit-build-core, ...), exactly as conda-build and pixi-build-python do.  This
file is therefore run as a script by *that* interpreter, which may be any
CPython from 3.8 on and has nothing but the standard library and the host
prefix's packages: it must not import the harness, and must not use syntax or
library features newer than Python 3.8.

Usage: ``python pep517_hook.py REQUEST.json``.  The request is a JSON object::

    {"backend": "setuptools.build_meta:__legacy__",
     "backend_path": ["/abs/in-tree/dir", ...],
     "wheel_dir": "/abs/dir/for/the/wheel",
     "config_settings": {"key": "value" | ["v1", "v2"]},
     "result": "/abs/result.json"}

The working directory is the source tree (PEP 517).  The outcome is written to
``result`` as JSON, because stdout and stderr belong to the build log:

* success: ``{"ok": true, "wheel": NAME, "python": "3.12", "abiflags": "",
  "cache_tag": "cpython-312", "ext_suffixes": [...]}`` and exit status 0; the wheel
  name is also printed as JSON on the last line of stdout;
* the backend cannot be imported: ``{"ok": false, "error": "import", "module":
  ..., "missing": ..., "message": ...}`` and exit status 3, so the harness can
  name the missing module instead of showing a traceback;
* the build fails: the traceback goes to the log and the exit status is 1; when
  it failed on an import (a module the build needs is not in the host prefix),
  the result is ``{"ok": false, "error": "build-import", "missing": ...}``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

#: Exit status when the backend (or something it imports) is missing.
EXIT_IMPORT = 3


def _isolate_sys_path() -> None:
    """Drop this script's own directory from ``sys.path``.

    Python puts the directory of the script it runs first on ``sys.path``;
    here that is the harness's ``build`` package, whose modules must never
    shadow a module of the host prefix or of the project being built.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]


def _load_backend(spec: str, backend_path: list[str]) -> Any:
    """Import ``module[:object.attr]`` as PEP 517 defines it, with ``backend-path`` first."""
    if backend_path:
        sys.path[:0] = backend_path
    module_name, _, attrs = spec.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def _write(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _interpreter() -> dict[str, Any]:
    """What the harness needs to know about this interpreter (asked once per build)."""
    import importlib.machinery
    import sysconfig

    return {
        "python": "{}.{}".format(*sys.version_info[:2]),
        "abiflags": getattr(sys, "abiflags", ""),
        "cache_tag": sys.implementation.cache_tag or "",
        "ext_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
        "platform": sysconfig.get_platform(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: pep517_hook.py REQUEST.json\n")
        return 2
    _isolate_sys_path()
    with open(argv[1], encoding="utf-8") as fh:
        request = json.load(fh)
    result_path = request["result"]
    backend_spec = request["backend"]
    try:
        backend = _load_backend(backend_spec, list(request.get("backend_path") or []))
    except ImportError as exc:
        traceback.print_exc()
        _write(
            result_path,
            {
                "ok": False,
                "error": "import",
                "module": backend_spec.partition(":")[0].strip(),
                "missing": getattr(exc, "name", None) or "",
                "message": str(exc),
            },
        )
        return EXIT_IMPORT
    except AttributeError as exc:
        traceback.print_exc()
        _write(
            result_path,
            {"ok": False, "error": "attribute", "module": backend_spec, "message": str(exc)},
        )
        return EXIT_IMPORT
    wheel_dir = request["wheel_dir"]
    settings = request.get("config_settings") or None
    print(f"[pep517] {backend_spec}.build_wheel({wheel_dir!r}, {settings!r})")
    sys.stdout.flush()
    try:
        name = backend.build_wheel(wheel_dir, settings)
    except ImportError as exc:
        # A module the build itself needs (Cython, numpy, pybind11...) is not in
        # the host prefix: say which one, the traceback is in the log already.
        traceback.print_exc()
        _write(
            result_path,
            {
                "ok": False,
                "error": "build-import",
                "module": backend_spec,
                "missing": getattr(exc, "name", None) or "",
                "message": str(exc),
            },
        )
        return 1
    if not isinstance(name, str) or not os.path.isfile(os.path.join(wheel_dir, name)):
        sys.stderr.write(
            f"the build backend returned {name!r}, which is not a file in {wheel_dir}\n"
        )
        return 1
    info = _interpreter()
    info.update({"ok": True, "wheel": name})
    _write(result_path, info)
    sys.stdout.flush()
    print(json.dumps(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
