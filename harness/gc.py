"""``harness gc``: remove the prefixes, builds and artifacts that no cell uses any more.

Matrices change: cells are renamed or dropped, sources are edited, a new host
package gives a variant a new key.  What the old cells left behind stays in
the cache root, and prefixes and builds are large.  ``harness gc [SOURCES...]``
removes it, per cache root of the cells that the sources define (the sources
default as for every other command: ``matrices/*.toml``, else the manifest here).

**What is used** is derived from the sources and the cache alone, without
solving or building, so gc is quick and safe to run at any time:

- a cell of the sources uses its ``envs/<cell>/`` (every prefix in it),
  ``solve/<cell>/``, ``logs/<cell>/``, ``reports/junit/<cell>.xml`` and its
  warm-start record ``warm/<cell>.json``;
- it uses the build directory ``build/<package>/<key>`` whose key is the
  variant key its *locked* build and host packages give, computed by the code
  the build itself uses (:func:`harness.build.driver.plan_build`), and the
  artifact ``artifacts/<package>/<key>-<fingerprint>`` of the *current* source
  tree: an artifact built from older sources is unused.
- an entry of the shared bytecode store ``bytecode/`` (:mod:`harness.bytecode`)
  is used while some ``.pyc`` under ``pycache/`` is a hard link of it: one
  with no other link (``st_nlink`` 1) is removed, and so are those whose
  last links were the bytecode of cells this gc removes.

Everything else under those directories is unused: the state of cells the
sources no longer define (renamed or removed), builds of variant keys no cell
has any more, artifacts of old sources, and what interrupted runs left.  The
sources are taken as the complete list of cells of each cache root they
touch: if two matrices share a root, ``harness gc matrices/a.toml`` removes
what only ``matrices/b.toml``'s cells use.

When gc cannot tell what a cell builds, it keeps instead of guessing: a cell
whose lock file exists but cannot be trusted (corrupt, half-written, missing
its build or host environment), or whose build cannot be planned, keeps every
build and artifact of its package, and the output says so.  A cell that was
never solved with this cache (no ``solve/<cell>/``) has built nothing yet and
keeps nothing.

``--older-than DAYS`` also removes *used* entries that nobody used for that
long: a cell's state as a whole (its next run solves and installs again), a
build directory, an artifact, and run reports (``reports/run-*.json``).  "Last
used" is the newest modification time of the entry and of its marker: a run
touches ``used/cells/<cell>`` and ``used/builds/<package>/<key>``
(:func:`mark_used`), files that nothing else reads, so marking changes no
mtime that a build tool or the warm start compares; a test run also rewrites
the cell's JUnit file.  ``--older-than 0`` removes everything gc may remove.

**Safety.**

- Nothing that runs is touched.  A cell's state is removed only while gc holds
  the cell's lock, a build directory or an artifact only while it holds the
  lock of its variant key; both are tried without waiting, and what is busy is
  skipped and listed as "in use".  A running cell also keeps every build and
  artifact of its variant key (it may be installing one of them), and a
  running cell that the sources do not define keeps every build and artifact
  of the root (which ones it uses cannot be told without its definition).
- Only ``envs/``, ``solve/``, ``logs/``, ``reports/``, ``warm/``, ``used/``,
  ``build/``, ``artifacts/``, ``bytecode/`` and the cells' bytecode under
  ``pycache/`` are looked at.  The offline channel
  (``channels/``), the lock files (deleting a lock file that another process
  waits on would let two processes hold "the same" lock) and names gc does
  not recognise stay.
- Nothing outside the root is touched: a symbolic link is removed as a link
  and never followed, and an entry whose directory resolves outside the root
  is skipped and reported.  A root that does not look like a harness cache (a
  ``.gitignore`` holding ``*`` and the standard subdirectories) is refused
  with an error, so a mistyped ``HARNESS_CACHE_DIR`` cannot empty a directory.
- The temporary file of an atomic write (a record, the lock, a JUnit file)
  that a killed run never renamed goes once it is ten minutes old: no write
  takes that long, so none in progress is touched.
- Each directory is first renamed to a ``.gc-trash-`` sibling (atomic) and
  then deleted, so a gc killed halfway never leaves a half-deleted prefix or
  build directory that a later run would trust; the next gc deletes the rest.

Sizes count disk blocks (``st_blocks * 512``), each hard-linked file once.
Prefixes hard-link their files from the shared package cache, so removing a
prefix frees less than its size: "freed" counts only files whose every link
was removed, and the output gives both numbers.  ``--dry-run`` removes
nothing and reports what would go; ``--json`` prints the report for machines.
gc exits 0; a refused root is a user error (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.build.driver import Artifact, BuildInputs, plan_build
from harness.bytecode import store_entries
from harness.cache import SUBDIRS, Cache, fsync_dir
from harness.cell import Cell, check_id
from harness.cli import COMMANDS, EXTRA_COMMANDS
from harness.errors import HarnessError
from harness.frozen import FrozenDict
from harness.lock import read_lock, record_identity
from harness.solve import TEST_ROLE, role_requests

# Kinds of entries, as the output names them.
PREFIXES = "prefixes"  # envs/<cell>: every prefix of one cell
SOLVE = "solve"  # solve/<cell>: the cell's lock file and its inputs record
LOGS = "logs"
JUNIT = "junit"
WARM = "warm"  # warm/<cell>.json: the cell's warm-start record
BUILD = "build"
ARTIFACT = "artifact"
REPORT = "report"  # reports/run-*.json (only with --older-than)
LEFTOVER = "leftover"  # what an interrupted build or gc left behind
MARKER = "marker"  # used/...: when a run last used a cell or a build (not listed in text)
BYTECODE = "bytecode"  # pycache/<...>/envs/<cell>: bytecode of the cell's prefixes
SHARED_PYC = "pyc-store"  # bytecode/<tag>/<key>.pyc: shared bytecode no mirrored file links
TEMPORARY = "temporary"  # .<name>...tmp: an atomic write that a killed run never renamed
SNAPSHOT = "snapshot"  # <index>/<key>.warm: a command line's warm-start snapshot (outside the roots)
LISTING = "listing"  # <index>/nox-<digest>.json: a cached session listing (outside the roots)

#: Where :mod:`harness.warm` keeps its per-cell records (``<cell>.json``).
WARM_DIR = "warm"
#: Where runs leave their "last used" markers.
USED_DIR = "used"
#: Prefix of the name a directory gets just before it is deleted.
TRASH_PREFIX = ".gc-trash-"
DAY = 86400.0

_KEY = re.compile(r"^[0-9a-f]{8,64}$")
_ARTIFACT = re.compile(r"^([0-9a-f]{8,64})-([0-9a-f]{8,64})$")
_PUBLISHING = re.compile(r"^\.([0-9a-f]{8,64})-([0-9a-f]{8,64})\.tmp-\d+$")
_TRASH = re.compile(rf"^{re.escape(TRASH_PREFIX)}(\d+)-")
_RUN_REPORT = re.compile(r"^run-.+\.json$")
#: A value :func:`harness.warm.store_cached` keeps in the warm-start index (``nox-<digest>.json``).
_CACHED_VALUE = re.compile(r"^[a-z]+-[0-9a-f]{24}\.json$")
#: The temporary names of the harness's atomic writes: ``cache.atomic_write_*`` (mkstemp),
#: the lock file (``.pixi.lock.tmp-<pid>``) and the JUnit file (``.<cell>.xml.<pid>.partial``).
_TEMPORARY = re.compile(r"^\..+(\.[a-z0-9_]{8}\.tmp|\.tmp-\d+|\.\d+\.partial)$")
#: A temporary file this old belongs to no write in progress: each takes milliseconds.
TEMPORARY_AGE = 600.0
_trash_counter = itertools.count()


# -- marking use -------------------------------------------------------------------------


def cell_marker(cache: Cache, cell_id: str) -> Path:
    """The file whose mtime says when a run last used the cell's state."""
    return cache.root / USED_DIR / "cells" / cell_id


def build_marker(cache: Cache, package: str, key: str) -> Path:
    """The file whose mtime says when a run last used a variant key's build and artifacts."""
    return cache.root / USED_DIR / "builds" / package / key


def touch_used(path: Path) -> None:
    """Set the marker ``path``'s mtime to now (creating it), for ``gc --older-than``.

    Best effort: a read-only file system must never fail a run.
    """
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def mark_used(cache: Cache, cell_id: str, artifact: Artifact | None = None) -> None:
    """Mark a cell's state and, if it has one, its build (key and artifacts) as used now.

    Called once per prepared cell, so that ``--older-than`` measures the time
    since a run last needed an entry rather than since it was created.
    """
    touch_used(cell_marker(cache, cell_id))
    if artifact is not None:
        touch_used(build_marker(cache, artifact.package, artifact.key))


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """One entry gc removed (or would remove, on a dry run)."""

    path: Path
    kind: str
    reason: str
    size: int  # disk blocks in bytes; hard-linked files counted once per root
    cell: str | None = None
    package: str | None = None
    key: str | None = None

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "relative": _relative(self.path, root),
            "kind": self.kind,
            "reason": self.reason,
            "bytes": self.size,
            "cell": self.cell,
            "package": self.package,
            "key": self.key,
        }


@dataclass(frozen=True)
class InUse:
    """Entries gc would remove but left alone because a running process holds their lock."""

    what: str  # "cell py312-cu13", "build pointops 1a2b..."
    paths: tuple[Path, ...]
    reason: str

    def to_json(self, root: Path) -> dict[str, Any]:
        return {"what": self.what, "paths": [_relative(p, root) for p in self.paths],
                "reason": self.reason}


@dataclass(frozen=True)
class RootReport:
    """What gc did in one cache root."""

    root: Path
    removed: tuple[Removal, ...] = ()
    in_use: tuple[InUse, ...] = ()
    kept: FrozenDict[str, str] = field(default_factory=FrozenDict)  # package -> why all is kept
    problems: tuple[str, ...] = ()  # entries that could not (or must not) be removed
    freed: int = 0  # bytes whose every link was removed
    exists: bool = True
    label: str = "cache"  # "cache", or "warm-start index" for the snapshots' directory

    @property
    def size(self) -> int:
        return sum(r.size for r in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "label": self.label,
            "exists": self.exists,
            "freed_bytes": self.freed,
            "removed_bytes": self.size,
            "removed": [r.to_json(self.root) for r in self.removed],
            "in_use": [u.to_json(self.root) for u in self.in_use],
            "kept": [{"package": p, "reason": why} for p, why in self.kept.items()],
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class GcReport:
    """What gc did in every cache root of the given cells."""

    roots: tuple[RootReport, ...]
    dry_run: bool
    older_than_days: float | None = None
    warm_index: RootReport | None = None  # the warm-start snapshots, outside every root

    @property
    def reports(self) -> tuple[RootReport, ...]:
        """The roots', then the warm-start index's."""
        return (*self.roots, *([self.warm_index] if self.warm_index is not None else []))

    @property
    def freed(self) -> int:
        return sum(r.freed for r in self.reports)

    @property
    def size(self) -> int:
        return sum(r.size for r in self.reports)

    @property
    def removed(self) -> tuple[Removal, ...]:
        return tuple(r for root in self.reports for r in root.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "older_than_days": self.older_than_days,
            "freed_bytes": self.freed,
            "removed_bytes": self.size,
            "roots": [r.to_json() for r in self.roots],
            "warm_index": self.warm_index.to_json() if self.warm_index is not None else None,
        }


# -- what the cells use --------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What the cells of one cache root use, derived from their locks without solving."""

    cells: frozenset[str]
    builds: frozenset[tuple[str, str]]  # (package, variant key)
    artifacts: frozenset[tuple[str, str]]  # (package, "<key>-<fingerprint>")
    packages: frozenset[str]  # packages that some cell builds on this machine
    keep: FrozenDict[str, str] = field(default_factory=FrozenDict)  # package -> why all is kept
    busy: FrozenDict[tuple[str, str], str] = field(default_factory=FrozenDict)  # key -> running cell


def planned_build(cache: Cache, cell: Cell) -> tuple[str, str] | str:
    """``(variant key, artifact directory name)`` of ``cell``'s build from its lock, or why unknown.

    The build and host packages are the locked ones, exactly as
    :func:`harness.stages.prepare` hands them to the build; the fingerprint is
    that of the source tree as it is now.
    """
    state = read_lock(cache, cell)
    if not state.exists:
        return "it has no lock file (interrupted solve?)"
    if state.problem:
        return f"its lock file cannot be trusted ({state.problem})"
    packages: dict[str, tuple[dict[str, Any], ...]] = {}
    for request in role_requests(cell):
        if request.role == TEST_ROLE:
            continue
        locked = state.roles.get(request.role)
        if locked is None:
            return f"its lock file has no {request.role!r} environment"
        packages[request.role] = tuple(record_identity(r) for r in locked.records)
    inputs = BuildInputs(
        build_prefix=cache.prefix(cell.id, "build"),
        host_prefix=cache.prefix(cell.id, "host"),
        build_packages=packages.get("build", ()),
        host_packages=packages.get("host", ()),
    )
    try:
        plan = plan_build(cell, cache, inputs)
    except (HarnessError, OSError, ValueError) as exc:
        return f"its build cannot be planned ({exc})"
    return plan.key.key, plan.artifact_dir.name


def usage(cache: Cache, cells: Sequence[Cell]) -> Usage:
    """What ``cells`` (all of them in ``cache``'s root) use; reads only."""
    from harness.stages import runs_here

    builds: set[tuple[str, str]] = set()
    artifacts: set[tuple[str, str]] = set()
    packages: set[str] = set()
    keep: dict[str, str] = {}
    busy: dict[tuple[str, str], str] = {}
    for cell in cells:
        pkg = cell.package
        if pkg is None or not runs_here(cell.platform):
            continue  # builds nothing on this machine
        packages.add(pkg.name)
        if not cache.solve_dir(cell.id).exists():
            continue  # never solved here: it has built nothing yet
        found = planned_build(cache, cell)
        if isinstance(found, str):
            keep.setdefault(pkg.name, f"cell {cell.id}: {found}")
            continue
        key, artifact = found
        builds.add((pkg.name, key))
        artifacts.add((pkg.name, artifact))
        if _held(cache.cell_lock(cell.id, timeout=0)):
            busy[(pkg.name, key)] = cell.id
    return Usage(
        cells=frozenset(c.id for c in cells),
        builds=frozenset(builds),
        artifacts=frozenset(artifacts),
        packages=frozenset(packages),
        keep=FrozenDict(keep),
        busy=FrozenDict(busy),
    )


# -- the cache root ------------------------------------------------------------------------


def check_root(root: Path) -> bool:
    """Whether ``root`` holds harness state to look at; raises if it is not a harness cache.

    A root that does not exist, or that holds only the offline channel, has
    nothing to collect.  A directory without the harness's ``.gitignore``
    (``*``), or with only some of the standard subdirectories, is refused.
    """
    if not os.path.lexists(root):
        return False
    hint = ("gc only cleans directories the harness created; check HARNESS_CACHE_DIR "
            "and the sources given")
    if not root.is_dir():
        raise HarnessError("the cache root is not a directory", file=root, hint=hint)
    try:
        ignored = [line.strip() for line in (root / ".gitignore").read_text("utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        ignored = []
    if "*" not in ignored:
        raise HarnessError(
            "this does not look like a harness cache (no .gitignore ignoring `*`); "
            "nothing was removed", file=root, hint=hint,
        )
    present = [name for name in SUBDIRS if (root / name).is_dir()]
    if not present:
        return False
    missing = [f"{name}/" for name in SUBDIRS if name not in present]
    if missing:
        raise HarnessError(
            f"this does not look like a harness cache ({', '.join(missing)} missing); "
            "nothing was removed", file=root, hint=hint,
        )
    return True


@dataclass(frozen=True)
class _Entry:
    """Something gc found under the root and may remove."""

    path: Path
    kind: str
    cell: str | None = None
    package: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class _Scan:
    cells: Mapping[str, tuple[_Entry, ...]]
    keys: Mapping[tuple[str, str], tuple[_Entry, ...]]
    loose: tuple[_Entry, ...]  # no lock guards them: gc trash and run reports


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _scan(cache: Cache) -> _Scan:
    """List the candidates once, before deciding: what appears later is never touched."""
    cells: dict[str, list[_Entry]] = {}
    keys: dict[tuple[str, str], list[_Entry]] = {}
    loose: list[_Entry] = []
    state_dirs = ((cache.envs_dir, PREFIXES), (cache.root / "solve", SOLVE), (cache.root / "logs", LOGS))
    for base, kind in state_dirs:
        for name in _names(base):
            if name.startswith(TRASH_PREFIX):
                loose.append(_Entry(base / name, LEFTOVER))
            elif check_id(name) is None:
                cells.setdefault(name, []).append(_Entry(base / name, kind, cell=name))
    mirror = bytecode_dir(cache)
    for name in _names(mirror):
        if check_id(name) is None:
            cells.setdefault(name, []).append(_Entry(mirror / name, BYTECODE, cell=name))
    for base, suffix, kind in ((cache.reports_dir / "junit", ".xml", JUNIT),
                               (cache.root / WARM_DIR, ".json", WARM),
                               (cache.root / USED_DIR / "cells", "", MARKER)):
        for name in _names(base):
            stem = name.removesuffix(suffix)
            if name.endswith(suffix) and check_id(stem) is None:
                cells.setdefault(stem, []).append(_Entry(base / name, kind, cell=stem))
    loose += [_Entry(cache.reports_dir / n, REPORT) for n in _names(cache.reports_dir)
              if _RUN_REPORT.match(n)]
    loose += [_Entry(path, TEMPORARY) for path in _temporary_files(cache)]
    builds_used = cache.root / USED_DIR / "builds"
    for base, kind in ((cache.build_dir, BUILD), (cache.artifacts_dir, ARTIFACT),
                       (builds_used, MARKER)):
        for package in _names(base):
            if package.startswith(".") or not (base / package).is_dir():
                continue
            for name in _names(base / package):
                path = base / package / name
                if name.startswith(TRASH_PREFIX):
                    loose.append(_Entry(path, LEFTOVER, package=package))
                    continue
                key = _key_of(kind, name)
                if key is None:
                    continue
                entry_kind = LEFTOVER if name.startswith(".") else kind
                keys.setdefault((package, key), []).append(
                    _Entry(path, entry_kind, package=package, key=key)
                )
    return _Scan(
        cells={c: tuple(v) for c, v in cells.items()},
        keys={k: tuple(v) for k, v in keys.items()},
        loose=tuple(loose),
    )


def _temporary_files(cache: Cache) -> list[Path]:
    """The atomic writes' temporary files in the directories the harness writes them to.

    Builds, prefixes' own files, the bytecode mirror and the offline channel
    clean up after themselves; these are the files of the harness's records:
    the root, ``solve/<cell>/``, ``warm/``, ``reports/``, ``used/`` and each
    prefix's ``conda-meta/`` (its activation cache).  The warm-start index,
    wherever it is, is :func:`gc_warm_index`'s.
    """
    root = cache.root
    places = [root, root / WARM_DIR, cache.reports_dir,
              cache.reports_dir / "junit", root / USED_DIR / "cells"]
    places += [root / "solve" / name for name in _names(root / "solve")]
    places += [root / USED_DIR / "builds" / name for name in _names(root / USED_DIR / "builds")]
    for cell in _names(cache.envs_dir):
        places += [cache.envs_dir / cell / role / "conda-meta" for role in _names(cache.envs_dir / cell)]
    found = []
    for place in places:
        if place.is_symlink():
            continue
        for name in _names(place):
            path = place / name
            if _TEMPORARY.match(name) and not path.is_symlink() and path.is_file():
                found.append(path)
    return found


def bytecode_dir(cache: Cache) -> Path:
    """Where ``PYTHONPYCACHEPREFIX`` (``<root>/pycache``) mirrors the prefixes of every cell."""
    envs = cache.envs_dir.absolute()
    return cache.root / "pycache" / envs.relative_to(envs.anchor)


def _key_of(kind: str, name: str) -> str | None:
    """The variant key a ``build/<pkg>/`` or ``artifacts/<pkg>/`` entry belongs to."""
    if kind in (BUILD, MARKER):
        return name if _KEY.match(name) else None
    match = _ARTIFACT.match(name) or _PUBLISHING.match(name)
    return match.group(1) if match else None


# -- locks ---------------------------------------------------------------------------------


def _held(lock: FileLock) -> bool:
    """Whether someone holds ``lock`` now; creates no lock file (nobody holds a missing one)."""
    if not os.path.exists(lock.lock_file):
        return False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


@contextlib.contextmanager
def _try_lock(lock: FileLock, dry_run: bool) -> Iterator[bool]:
    """Hold ``lock`` if it is free (``True``), without waiting; a dry run only looks."""
    if dry_run:
        yield not _held(lock)
        return
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


# -- measuring and deleting ----------------------------------------------------------------


_Inodes = dict[tuple[int, int], list[int]]  # (dev, ino) -> [bytes, nlink, is_dir, links seen]


def measure(path: Path) -> _Inodes:
    """The inodes under ``path`` (never following symbolic links), for sizes and "freed"."""
    found: _Inodes = {}

    def add(st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if key in found:
            found[key][3] += 1
        else:
            found[key] = [st.st_blocks * 512, st.st_nlink, int(stat.S_ISDIR(st.st_mode)), 1]

    try:
        top = os.lstat(path)
    except OSError:
        return found
    add(top)
    stack = [os.fspath(path)] if stat.S_ISDIR(top.st_mode) else []
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            add(st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return found


class _Tally:
    """Inodes removed in one root: each counted once; freed when all its links are gone."""

    def __init__(self) -> None:
        self.inodes: _Inodes = {}

    def add(self, found: _Inodes) -> int:
        """Merge an entry's inodes; returns the bytes not counted by an earlier entry."""
        added = 0
        for key, (size, nlink, is_dir, seen) in found.items():
            have = self.inodes.get(key)
            if have is None:
                self.inodes[key] = [size, nlink, is_dir, seen]
                added += size
            else:
                have[3] += seen
        return added

    @property
    def freed(self) -> int:
        return sum(size for size, nlink, is_dir, seen in self.inodes.values() if is_dir or seen >= nlink)


def _inside(real_root: Path, path: Path) -> bool:
    """Whether ``path``'s directory is really under the root (no symlinked way out)."""
    try:
        parent = path.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return parent == real_root or real_root in parent.parents


def _trash_pid_alive(name: str) -> bool:
    """Whether the gc that renamed this entry to trash is still running (and deleting it)."""
    match = _TRASH.match(name)
    if not match or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _rmtree_once(path: Path) -> list[OSError]:
    errors: list[OSError] = []

    def note(_func: Callable[..., Any], _path: str, exc: BaseException) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            errors.append(exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: note(f, p, info[1]))
    return errors


def _rmtree(path: Path) -> None:
    """Delete a directory tree without following links; read-only directories are made writable."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink(missing_ok=True)
            return
    except FileNotFoundError:
        return
    if not _rmtree_once(path) or not os.path.lexists(path):
        return
    for dirpath, _dirs, _files in os.walk(path):  # does not descend into links
        with contextlib.suppress(OSError):
            mode = os.lstat(dirpath).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(dirpath, stat.S_IMODE(mode) | stat.S_IRWXU)
    errors = _rmtree_once(path)
    if errors and os.path.lexists(path):
        raise errors[0]


def delete(path: Path) -> None:
    """Remove one entry: a file or link itself, a directory renamed aside first and then deleted."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    target = path
    if not path.name.startswith(TRASH_PREFIX):
        target = path.with_name(f"{TRASH_PREFIX}{os.getpid()}-{next(_trash_counter)}-{path.name}")
        os.rename(path, target)
        fsync_dir(path.parent)
    _rmtree(target)


class _Collector:
    """Removes (or, on a dry run, lists) entries of one root and keeps the account."""

    def __init__(self, cache: Cache, dry_run: bool) -> None:
        self.cache = cache
        self.real_root = cache.root.resolve()
        self.dry_run = dry_run
        self.tally = _Tally()
        self.removed: list[Removal] = []
        self.in_use: list[InUse] = []
        self.problems: list[str] = []

    def remove(self, entry: _Entry, reason: str) -> None:
        rel = _relative(entry.path, self.cache.root)
        if not _inside(self.real_root, entry.path):
            self.problems.append(f"{rel}: its directory is outside the cache root; not touched")
            return
        found = measure(entry.path)
        if not self.dry_run:
            try:
                delete(entry.path)
            except OSError as exc:
                self.problems.append(f"{rel}: could not be removed: {exc}")
                return
        size = self.tally.add(found)
        self.removed.append(
            Removal(entry.path, entry.kind, reason, size, entry.cell, entry.package, entry.key)
        )

    def busy(self, what: str, entries: Sequence[_Entry], reason: str) -> None:
        paths = tuple(e.path for e in entries if e.kind != MARKER)
        self.in_use.append(InUse(what, paths, reason))


# -- deciding ------------------------------------------------------------------------------


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _age_reason(days: float, last: float) -> str:
    when = datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M") if last else "never"
    return f"last used {when}, more than {days:g} days ago"


def _cell_reason(
    use: Usage, cell_id: str, entries: Sequence[_Entry], older_than: float | None,
    cutoff: float | None,
) -> str | None:
    """Why a cell's state goes (all of it), or ``None`` when it stays."""
    if cell_id not in use.cells:
        return f"cell {cell_id} is not in the sources"
    if older_than is None or cutoff is None:
        return None
    last = max(_mtime(e.path) for e in entries)
    return _age_reason(older_than, last) if last <= cutoff else None


def _gc_cell(
    col: _Collector, use: Usage, cell_id: str, entries: Sequence[_Entry], *,
    older_than: float | None, cutoff: float | None,
) -> bool:
    """Remove the cell's state if it goes and is free; ``True`` when a running process holds it."""
    if _cell_reason(use, cell_id, entries, older_than, cutoff) is None:
        return False
    with _try_lock(col.cache.cell_lock(cell_id, timeout=0), col.dry_run) as free:
        if not free:
            col.busy(f"cell {cell_id}", entries, "a running process holds the cell's lock")
            return True
        # Decided again under the lock: a run that just ended has made the cell's state used.
        reason = _cell_reason(use, cell_id, entries, older_than, cutoff)
        if reason is None:
            return False
        for entry in entries:
            col.remove(entry, reason)
    return False


def _unused_reason(entry: _Entry, use: Usage) -> str | None:
    """Why a build-side entry is unused, or ``None`` when a cell uses (or may use) it."""
    package, key = entry.package or "", entry.key or ""
    if entry.kind == LEFTOVER:
        return "left by an interrupted build"
    if package in use.keep:
        return None
    if entry.kind == ARTIFACT:
        if (package, entry.path.name) in use.artifacts:
            return None
        if (package, key) in use.builds:
            return "built from older sources"
    elif (package, key) in use.builds:
        return None
    if package not in use.packages:
        return f"no cell of the sources builds {package}"
    return "no cell of the sources has this variant key"


def _key_decisions(
    entries: Sequence[_Entry], use: Usage, older_than: float | None, cutoff: float | None
) -> list[tuple[_Entry, str]]:
    marked = max((_mtime(e.path) for e in entries if e.kind == MARKER), default=0.0)
    out: list[tuple[_Entry, str]] = []
    for entry in entries:
        reason = _unused_reason(entry, use)
        if reason is None and older_than is not None and cutoff is not None:
            last = max(_mtime(entry.path), marked)
            if last <= cutoff:
                reason = _age_reason(older_than, last)
        if reason is not None:
            out.append((entry, reason))
    return out


def _gc_key(
    col: _Collector, use: Usage, package: str, key: str, entries: Sequence[_Entry], *,
    older_than: float | None, cutoff: float | None,
) -> None:
    if not _key_decisions(entries, use, older_than, cutoff):
        return
    what = f"build {package} {key}"
    running = use.busy.get((package, key))
    if running is not None:
        col.busy(what, entries, f"cell {running} is running and uses this variant key")
        return
    with _try_lock(col.cache.key_lock(f"build:{package}:{key}", timeout=0), col.dry_run) as free:
        if not free:
            col.busy(what, entries, "a build of this variant key is running")
            return
        for entry, reason in _key_decisions(entries, use, older_than, cutoff):
            col.remove(entry, reason)


def _gc_shared_bytecode(col: _Collector) -> None:
    """Remove the store entries (:mod:`harness.bytecode`) that no mirrored ``.pyc`` links any more.

    Run after the cells' state went, so that the entries only the removed
    cells' bytecode linked go in the same gc.  A dry run removed nothing: the
    links its listed entries hold are subtracted instead.  No lock is needed:
    a run that links an entry just as it goes fails to link and keeps its own
    file, and a file linked from an entry that then goes stays valid.
    """
    for path, st in store_entries(col.cache.bytecode_store):
        links = st.st_nlink
        if col.dry_run:
            counted = col.tally.inodes.get((st.st_dev, st.st_ino))
            links -= counted[3] if counted is not None else 0
        if links <= 1:
            col.remove(_Entry(path, SHARED_PYC), "no prefix's bytecode links it any more")


def gc_warm_index(
    *, dry_run: bool = False, now: float | None = None, removed: Sequence[Path] = ()
) -> RootReport | None:
    """Remove the warm-start snapshots that can never be replayed again, and interrupted writes.

    The index (:func:`harness.warmstart.index_dir`, in the user's cache unless
    ``$HARNESS_CACHE_DIR`` or ``$HARNESS_WARM_DIR`` moves it) holds one
    snapshot per command line, of any project, and nox's cached session
    listings (:func:`_dead_cached_value`).  A snapshot whose cell record is
    gone (gc removed the cell, or its cache root was deleted) only ever sends
    its command line down the full path, which writes a new one: it goes.  A
    snapshot this interpreter cannot read may be another Python's, and one
    whose sources changed is replaced by the next run of its command line:
    both stay.  ``removed`` are the paths this gc removed (or, on a dry run,
    would remove) from the roots: a record among them counts as gone.  ``None``
    when there is no index.
    """
    from harness.warmstart import SNAPSHOT_SUFFIX, index_dir

    index = Path(index_dir())
    names = _names(index)
    if not names or index.is_symlink():
        return None
    now = time.time() if now is None else now
    col = _Collector(Cache(index), dry_run)
    for name in names:
        path = index / name
        if path.is_symlink() or not path.is_file():
            continue
        if _TEMPORARY.match(name):
            if now - _mtime(path) > TEMPORARY_AGE:
                col.remove(_Entry(path, TEMPORARY), "a temporary file that an interrupted run left")
        elif name.endswith(SNAPSHOT_SUFFIX):
            reason = _dead_snapshot(path, frozenset(str(p) for p in removed))
            if reason is not None:
                col.remove(_Entry(path, SNAPSHOT), reason)
        elif _CACHED_VALUE.match(name):
            reason = _dead_cached_value(path)
            if reason is not None:
                col.remove(_Entry(path, LISTING), reason)
    return RootReport(root=index, removed=tuple(col.removed), problems=tuple(col.problems),
                      freed=col.tally.freed, label="warm-start index")


def _dead_cached_value(path: Path) -> str | None:
    """Why a value :func:`harness.warm.store_cached` kept (nox's session listing) is never read again.

    It is read only while every file it was computed from is unchanged, and a
    run that finds one changed computes and stores it anew; so once an input
    changed, the file is garbage whatever happens next.  Its inputs are files
    only (no environment), so this holds whichever shell gc runs from.
    """
    from harness.warmstart import FORMAT, changed

    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        return None  # another version's: not ours to judge
    entries, taken = stored.get("inputs"), stored.get("taken_ns", 0)
    if not isinstance(entries, dict) or not isinstance(taken, int):
        return None
    why = changed(entries, taken)
    return None if why is None else f"a cached listing that is never read again: {why}"


def _dead_snapshot(path: Path, removed: frozenset[str]) -> str | None:
    """Why the snapshot at ``path`` can never be replayed (a cell record it names is gone), or ``None``."""
    import marshal

    try:
        snapshot = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None  # another Python's marshal format, or being replaced: not ours to judge
    cells = snapshot.get("cells") if isinstance(snapshot, dict) else None
    for cell in cells if isinstance(cells, list) else ():
        record = cell.get("record_file") if isinstance(cell, dict) else None
        if isinstance(record, str) and os.path.isabs(record) and (
            record in removed or not os.path.lexists(record)
        ):
            return f"the record of cell {cell.get('cell', '?')} ({record}) is gone"
    return None


def gc_root(
    cache: Cache,
    cells: Sequence[Cell],
    *,
    dry_run: bool = False,
    older_than_days: float | None = None,
    now: float | None = None,
) -> RootReport:
    """Collect one cache root; ``cells`` are all the cells of the sources that use it."""
    if not check_root(cache.root):
        return RootReport(root=cache.root, exists=False)
    now = time.time() if now is None else now
    cutoff = None if older_than_days is None else now - older_than_days * DAY
    scan = _scan(cache)  # first: what a concurrent run creates after this is never a candidate
    use = usage(cache, cells)
    col = _Collector(cache, dry_run)
    running = [
        cell_id for cell_id in sorted(scan.cells)
        if _gc_cell(col, use, cell_id, scan.cells[cell_id], older_than=older_than_days, cutoff=cutoff)
    ]
    kept = dict(use.keep)
    foreign = [cell_id for cell_id in running if cell_id not in use.cells]
    if foreign:
        # A running cell the sources do not define may be installing one of its builds,
        # and which one cannot be told without its definition: keep them all this time.
        why = (f"cell {foreign[0]} is running but the sources do not define it, "
               "so what it builds cannot be told")
        kept.update({package: why for package, _key in scan.keys if package not in kept})
    else:
        for package, key in sorted(scan.keys):
            _gc_key(col, use, package, key, scan.keys[(package, key)],
                    older_than=older_than_days, cutoff=cutoff)
    _gc_shared_bytecode(col)
    for entry in scan.loose:
        if entry.kind == LEFTOVER and not _trash_pid_alive(entry.path.name):
            col.remove(entry, "left by an interrupted gc")
        elif entry.kind == TEMPORARY and now - _mtime(entry.path) > TEMPORARY_AGE:
            if not any(entry.path.is_relative_to(gone.path) for gone in col.removed):
                col.remove(entry, "a temporary file that an interrupted run left")
        elif entry.kind == REPORT and older_than_days is not None and cutoff is not None:
            last = _mtime(entry.path)
            if last <= cutoff:
                col.remove(entry, f"run report older than {older_than_days:g} days")
    return RootReport(
        root=cache.root,
        removed=tuple(col.removed),
        in_use=tuple(col.in_use),
        kept=FrozenDict(kept),
        problems=tuple(col.problems),
        freed=col.tally.freed,
    )


def collect_garbage(
    cells: Sequence[Cell],
    *,
    dry_run: bool = False,
    older_than_days: float | None = None,
    now: float | None = None,
) -> GcReport:
    """Collect every cache root of ``cells``; ``cells`` are taken as all the cells of those roots."""
    if older_than_days is not None and not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise HarnessError(f"--older-than must be a number of days >= 0, not {older_than_days}")
    groups: dict[Path, list[Cell]] = {}
    caches: dict[Path, Cache] = {}
    for cell in cells:
        cache = Cache.for_manifest(cell.manifest)
        caches.setdefault(cache.root, cache)
        groups.setdefault(cache.root, []).append(cell)
    roots = tuple(
        gc_root(caches[root], group, dry_run=dry_run, older_than_days=older_than_days, now=now)
        for root, group in groups.items()
    )
    # After the roots: the snapshots of the cells they just dropped go in the same gc.
    gone = [r.path for root in roots for r in root.removed]
    index = gc_warm_index(dry_run=dry_run, now=now, removed=gone)
    return GcReport(roots=roots, dry_run=dry_run, older_than_days=older_than_days, warm_index=index)


# -- output --------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def mb(size: int) -> str:
    """Megabytes (10^6 bytes), with more digits for small amounts than one decimal shows."""
    return f"{size / 1e6:.{1 if size >= 10**7 else 2}f} MB"


def human(size: int) -> str:
    """A size in the unit that shows it best (kB, MB, GB)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.1f} kB"


def _shown(root: RootReport) -> list[Removal]:
    """The removals the text lists: markers are bookkeeping, shared bytecode is one line per root.

    The store's entries are single small files, often hundreds at once (the
    bytecode of a dropped cell's packages): they are summed into one line,
    and ``--json`` lists each of them.
    """
    shown = [r for r in root.removed if r.kind not in (MARKER, SHARED_PYC)]
    shared = [r for r in root.removed if r.kind == SHARED_PYC]
    if shared:
        store = Cache(root.root).bytecode_store
        files = f"{len(shared)} {'file' if len(shared) == 1 else 'files'}"
        shown.append(Removal(store, SHARED_PYC, f"{files} no prefix's bytecode links any more",
                             sum(r.size for r in shared)))
    return shown


def render_report(report: GcReport) -> str:
    """The human-readable account: each removal, what is in use or kept, and what was freed."""
    verb = "would remove" if report.dry_run else "removed"
    lines: list[str] = []
    for root in report.reports:
        if not root.exists:
            lines.append(f"cache {root.root}: nothing has been prepared here")
            continue
        if root is report.warm_index and not (root.removed or root.problems):
            continue  # nothing to say about it
        lines.append(f"{root.label} {root.root}")
        shown = _shown(root)
        rels = [_relative(r.path, root.root) for r in shown]
        width = max((len(r) for r in rels), default=0)
        for rel, r in zip(rels, shown, strict=True):
            lines.append(f"  {verb} {r.kind:<9} {rel:<{width}}  {human(r.size):>9}  {r.reason}")
        for u in root.in_use:
            paths = ", ".join(_relative(p, root.root) for p in u.paths)
            lines.append(f"  in use: {u.what} ({paths}): {u.reason}")
        for package, why in root.kept.items():
            lines.append(f"  kept: every build and artifact of {package}: {why}")
        lines += [f"  not removed: {p}" for p in root.problems]
        if not (root.removed or root.in_use or root.kept or root.problems):
            lines.append("  nothing to remove")
    count = sum(len(_shown(root)) for root in report.reports)
    total = f"{'would free' if report.dry_run else 'freed'} {mb(report.freed)}"
    total += f" ({count} {'entry' if count == 1 else 'entries'}"
    if mb(report.size) != mb(report.freed):
        total += (f", {mb(report.size)} on disk: the rest stays, hard-linked from elsewhere "
                  "such as the package cache")
    lines.append(total + ")")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, not {text!r}")
    return value


def cmd_gc(args: argparse.Namespace) -> int:
    from harness.loader import compile_sources

    compiled = compile_sources([Path(p) for p in args.sources] or None)
    for warning in compiled.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    report = collect_garbage(
        compiled.cells, dry_run=args.dry_run, older_than_days=args.older_than
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render_report(report))
    return 0


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "gc",
        help="remove prefixes, builds and artifacts that no cell uses any more",
        description="Remove what no cell of the sources uses any more (state of removed or "
        "renamed cells, builds of old variant keys, artifacts of old sources) from their cache "
        "roots. Running cells are never touched. The sources are taken as every cell of the "
        "cache roots they use.",
    )
    p.add_argument(
        "sources", nargs="*", metavar="MATRIX_OR_MANIFEST",
        help="matrix files or manifests (default: matrices/*.toml)",
    )
    p.add_argument("--dry-run", action="store_true", help="remove nothing; list what would go")
    p.add_argument(
        "--older-than", type=_days, metavar="DAYS", default=None,
        help="also remove what cells still use but no run used for DAYS days "
        "(0: everything), and run reports that old",
    )
    p.add_argument("--json", action="store_true", help="a JSON report")


EXTRA_COMMANDS.append(_register)
COMMANDS["gc"] = cmd_gc
