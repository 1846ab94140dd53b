"""Publishing directories and files so readers only ever see complete ones.

A channel is built in a temporary sibling directory and then put in place.
On Linux the two directories are swapped in one ``renameat2(RENAME_EXCHANGE)``
call, so ``root`` is never missing, not even for a moment; elsewhere (or on
file systems without it) the old directory is renamed away first. Either way
a build killed at any point leaves ``root`` either absent, or the previous
complete channel, never a half-written one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False if the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def publish_dir(work: Path, root: Path) -> None:
    """Make the finished directory ``work`` become ``root``; remove the old one."""
    if not root.exists() and not root.is_symlink():
        os.rename(work, root)
        return
    if root.is_dir() and not root.is_symlink() and _renameat2_exchange(work, root):
        shutil.rmtree(work, ignore_errors=True)  # ``work`` now holds the old channel
        return
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(root, old)
    os.rename(work, root)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def write_json(path: Path, data: object) -> None:
    """Write JSON through a temporary file and a rename (never a torn file)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (cheap reuse of an unchanged archive), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
