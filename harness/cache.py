"""The cache layout: where locks, prefixes, builds, artifacts and reports live.

Everything the harness writes goes under one root (``$HARNESS_CACHE_DIR`` or
``.harness/`` beside the manifest) so that ``gc`` and ``git status`` have one
place to look.  The root carries its own ``.gitignore`` (``*``), as pixi's
``.pixi/`` does.  The conda package cache is *not* under the root: it is shared
between projects (``$HARNESS_PKGS_DIR`` or rattler's default) and prefixes
hard-link from it.

Writers publish with :func:`atomic_write_text` (invariant 4) and serialise on
file locks (invariant 5): one per cell, plus one per shared key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filelock import FileLock

CACHE_ENV = "HARNESS_CACHE_DIR"
PKGS_ENV = "HARNESS_PKGS_DIR"
DEFAULT_DIRNAME = ".harness"
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory holds variant-harness caches: https://bford.info/cachedir/\n"
)
SUBDIRS = ("locks", "envs", "build", "artifacts", "reports", "solve")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half of one.

    The temporary file lives in the same directory (``os.replace`` must not cross
    file systems) and is fsynced before the rename, so a crash right after the
    rename cannot leave an empty file behind.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write_text` of raw bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any) -> None:
    """:func:`atomic_write_text` of ``value`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every FS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable.

    Markers and sidecars are only ever trusted when they parse; anything else
    means "redo the stage", so callers need no exception handling.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


_sha_memo: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str | None:
    """Hex sha256 of a file (``None`` if missing), memoised on (path, inode, size, mtime).

    Repodata is hashed on every run to decide whether work is needed; the
    memo makes that one read per file per process.  As git does against
    "racy" timestamps, a file modified in the last two seconds is not memoised:
    a rewrite within the file system's timestamp granularity could otherwise
    keep the same key.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _sha_memo.get(key)
    if cached is None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return None
        cached = h.hexdigest()
        if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            _sha_memo[key] = cached
    return cached


@dataclass(frozen=True)
class Cache:
    """One cache root and the shared package cache.

    ``pkgs_dir`` ``None`` means rattler's default package cache
    (``~/.cache/rattler/cache/pkgs``), which every project on the machine shares.
    """

    root: Path
    pkgs_dir: Path | None = None

    @classmethod
    def for_manifest(cls, manifest: Path, environ: Mapping[str, str] | None = None) -> Cache:
        """The cache of the project whose manifest is ``manifest``, honouring the env overrides."""
        environ = os.environ if environ is None else environ
        override = environ.get(CACHE_ENV)
        root = Path(override).expanduser() if override else Path(manifest).parent / DEFAULT_DIRNAME
        pkgs = environ.get(PKGS_ENV)
        return cls(
            root=root.absolute(), pkgs_dir=Path(pkgs).expanduser().absolute() if pkgs else None
        )

    # -- layout ---------------------------------------------------------------

    def ensure(self) -> Cache:
        """Create the root (with its ``.gitignore``) and the standard subdirectories."""
        self.root.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            atomic_write_text(ignore, "*\n")
        tag = self.root / "CACHEDIR.TAG"  # backup tools and tree walks skip the whole root
        if not tag.exists():
            atomic_write_text(tag, CACHEDIR_TAG)
        for name in SUBDIRS:
            (self.root / name).mkdir(exist_ok=True)
        return self

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def envs_dir(self) -> Path:
        return self.root / "envs"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def bytecode_store(self) -> Path:
        """Bytecode shared by the prefixes' mirrors under ``pycache/`` (:mod:`harness.bytecode`).

        Beside ``pycache/`` under the root, so that hard links between them stay
        on one file system.  Created on first use: it is not a standard
        subdirectory (gc's root check does not require it).
        """
        return self.root / "bytecode"

    def solve_dir(self, cell_id: str) -> Path:
        """Where the cell's ``pixi.lock`` and its input-hash sidecar live."""
        return self.root / "solve" / cell_id

    def prefix(self, cell_id: str, role: str) -> Path:
        """The conda prefix of one role (``build``, ``host``, ``test``) of one cell."""
        return self.envs_dir / cell_id / role

    # -- locks ----------------------------------------------------------------

    def cell_lock(self, cell_id: str, timeout: float = -1) -> FileLock:
        """The lock every stage of ``cell_id`` holds while it reads and writes the cell's state."""
        from filelock import FileLock

        self.ensure()
        # One lock object per path in this process (re-entrant): a run holds the
        # cell's lock around prepare *and* the tests, and prepare takes it again.
        # A lock with a timeout (gc's "is it busy?") is a separate object, so it
        # sees the cell as busy even from the process that runs it.
        return FileLock(
            self.locks_dir / f"cell-{cell_id}.lock", timeout=timeout, is_singleton=timeout == -1
        )

    def key_lock(self, key: str, timeout: float = -1) -> FileLock:
        """A lock for state that several cells share (a build dir keyed by variant key, ...)."""
        from filelock import FileLock

        self.ensure()
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        return FileLock(self.locks_dir / f"key-{name}.lock", timeout=timeout)
