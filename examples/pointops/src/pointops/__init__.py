"""pointops: small point operations with a C core.

``packaging`` is imported at import time on purpose: it is a real run-time
dependency, so a release build whose package forgets it in its run-dependencies
fails to import in a clean test environment.
"""

from __future__ import annotations

from packaging.version import Version

from pointops._core import built_for_cuda, built_for_python, dot, norm

__version__ = "0.1.0"
__all__ = ["build_info", "built_for_cuda", "built_for_python", "dot", "norm"]


def build_info() -> dict[str, Version | None]:
    """What the extension was compiled for, as comparable versions (CUDA ``None`` when built without)."""
    cuda = built_for_cuda()
    return {
        "python": Version(built_for_python()),
        "cuda": None if cuda == "none" else Version(cuda),
    }
