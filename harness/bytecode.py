"""Share the bytecode of test runs: one ``.pyc`` per source file, hard-linked wherever it is needed.

Test commands write their bytecode under ``<root>/pycache`` (``PYTHONPYCACHEPREFIX``),
which mirrors the absolute path of every imported source directory.  Every
cell's prefix then gets its own copy of the bytecode of pytest, pygments,
setuptools..., although the sources in every prefix are hard links of one
package-cache file, and the interpreter's standard library is compiled again
although the interpreter ships valid ``.pyc`` files beside it (Python ignores
them once a prefix is set).

A ``.pyc`` is valid for *any* path of its source: the import system checks
only its 16-byte header (magic number; flags; for a timestamp ``.pyc`` the
source's mtime in seconds and its size, both modulo 2**32), and rewrites the
code objects' file names to the path it loaded the source from
(``importlib._bootstrap_external._compile_bytecode``), so tracebacks still
name the right file.  :func:`share_bytecode` therefore replaces each mirrored
``.pyc`` by a hard link to one shared file:

1. the **shipped** ``.pyc`` beside the source (``D/__pycache__/X.<tag>.pyc``:
   the interpreter's standard library, packages that ship bytecode) when its
   header is ours and it holds the very same bytes (it was compiled from the
   same path) or was written once its source had settled (see below);
2. otherwise the **store** entry of the source's content
   (``<store>/<tag>/<magic>-<sha256 of the .pyc header and the source>.pyc``):
   every prefix's copy of a package file has the same content and header, so
   the first prefix's ``.pyc`` becomes the store entry and the next ones link
   to it.  The key is the content, not the inode: package caches normalise
   mtimes (every file of the offline channel has the same one), so an inode
   freed by a cleaned package cache and reused by another file of the same
   size would otherwise name another source's bytecode.

Python never writes a ``.pyc`` in place: a stale one is replaced by a new
file (``_write_atomic``: a temporary name, then ``os.replace``), so a source
changed in one prefix gets its own bytecode there and leaves the shared file,
and every other prefix, alone.  Each replacement here is atomic too (a link
under a temporary name, then ``os.replace``): a concurrent import reads the
old file or the new one, both valid.

Only what can be proved is shared: a timestamp ``.pyc`` (hash-based ones are
left alone) whose header matches its source, whose source had not changed
for :data:`SETTLED_NS` when the ``.pyc`` was written (as git does against
"racy" timestamps: the header keeps whole seconds, so a source rewritten with
the same size within the second it was compiled in still matches it),
and whose directory really lies inside the given source tree (not reached
through a symbolic link into, say, the package's own source tree).
Sharing is an optimisation: any error leaves that file as it was, and
nothing here raises.  A file already hard-linked is skipped after one
``stat``, so a re-run costs a walk of the mirror.

``harness gc`` removes store entries no mirrored file links any more
(``st_nlink == 1``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: A source modified less than this before its ``.pyc`` was written may have changed
#: within the same second after it was compiled: such a ``.pyc`` is not shared.
SETTLED_NS = 2_000_000_000
HEADER_SIZE = 16

#: ``X.<cache tag>[.opt-N].pyc``, as ``importlib.util.cache_from_source`` names it.  The
#: tag must be a whole dotted part (``cpython-312``, ``cpython-313t``, ``pypy310``), so
#: pytest's rewritten modules (``X.cpython-312-pytest-8.3.4.pyc``, loaded without
#: the import system's file-name fix-up) never match.
PYC_NAME = re.compile(
    r"^(?P<stem>.+)\.(?P<tag>[A-Za-z]+-?[0-9]+[A-Za-z]*)(?P<opt>\.opt-[0-9A-Za-z]+)?\.pyc$"
)
_TMP = re.compile(r"^\..+\.share-(\d+)-\d+\.tmp$")
_counter = itertools.count()


@dataclass(frozen=True)
class ShareStats:
    """What one :func:`share_bytecode` call found and did."""

    examined: int = 0  # .pyc files looked at
    already: int = 0  # already hard-linked (shared by an earlier call)
    shipped: int = 0  # replaced by a link to the .pyc shipped beside the source
    stored: int = 0  # replaced by a link to the store entry of the source
    added: int = 0  # became a new store entry
    freed: int = 0  # disk blocks, in bytes, of the replaced files

    @property
    def linked(self) -> int:
        """Files that now share their inode with another file because of this call."""
        return self.shipped + self.stored + self.added


class _CannotLink(Exception):
    """Hard links between the mirror and the store are impossible: stop early."""


class _Counts:
    def __init__(self) -> None:
        self.examined = self.already = self.shipped = self.stored = self.added = self.freed = 0

    def freeze(self) -> ShareStats:
        return ShareStats(self.examined, self.already, self.shipped, self.stored, self.added,
                          self.freed)


def mirror_dir(pycache: Path, source_dir: Path) -> Path:
    """Where Python writes the bytecode of ``source_dir``'s modules under ``pycache``.

    As ``cache_from_source`` does with ``sys.pycache_prefix``: the absolute path
    (symbolic links *not* resolved), its anchor dropped, joined to the prefix.
    """
    absolute = Path(os.path.abspath(source_dir))
    return Path(pycache) / absolute.relative_to(absolute.anchor)


def interpreter_dirs(prefixes: Iterable[Path]) -> tuple[Path, ...]:
    """The ``lib`` directories of the interpreters the venv-style prefixes run (``pyvenv.cfg``).

    The offline channel's ``python`` is a ``pyvenv.cfg`` pointing at one of the
    machine's interpreters (``home = <base>/bin``): its standard library, and
    the bytecode shipped with it, lie under ``<base>/lib``.  A prefix with a
    real interpreter of its own has its standard library inside the prefix.
    """
    found: list[Path] = []
    for prefix in prefixes:
        try:
            text = (Path(prefix) / "pyvenv.cfg").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            key, eq, value = line.partition("=")
            if eq and key.strip() == "home" and value.strip():
                lib = Path(value.strip()).parent / "lib"
                if lib not in found:
                    found.append(lib)
    return tuple(found)


def share_prefix_bytecode(pycache: Path, prefixes: Iterable[Path], store: Path) -> ShareStats:
    """:func:`share_bytecode` for a cell's prefixes and the interpreters they run."""
    prefixes = [Path(p) for p in prefixes]
    return share_bytecode(pycache, [*prefixes, *interpreter_dirs(prefixes)], store)


def share_bytecode(pycache: Path, sources: Iterable[Path], store: Path) -> ShareStats:
    """Hard-link the mirrored bytecode of every directory under ``sources`` to one shared file.

    ``pycache`` is the ``PYTHONPYCACHEPREFIX`` root, ``store`` the directory of
    shared entries (on the same file system: hard links cannot cross one).
    Never raises (but lets ``KeyboardInterrupt`` through): a file that cannot
    be shared stays as it is.
    """
    counts = _Counts()
    walked: set[Path] = set()
    try:
        for source in sources:
            source = Path(os.path.abspath(source))
            mirror = mirror_dir(pycache, source)
            if mirror in walked:
                continue
            walked.add(mirror)
            _share_tree(mirror, source, Path(store), counts, walked)
    except Exception:  # _CannotLink, or a defect: an optimisation must never fail a run
        pass
    return counts.freeze()


def _scan(directory: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            yield from list(entries)
    except OSError:
        return


def _share_tree(mirror: Path, source: Path, store: Path, counts: _Counts, walked: set[Path]) -> None:
    real_source: str | None = None
    stack = [mirror]
    while stack:
        directory = stack.pop()
        inside: bool | None = None  # decided once per directory, only when a file needs it
        for entry in _scan(directory):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                sub = Path(entry.path)
                if sub not in walked:  # a nested source given too is walked once
                    walked.add(sub)
                    stack.append(sub)
                continue
            name = entry.name
            if not stat.S_ISREG(st.st_mode):
                continue
            if _TMP.match(name):
                _drop_stale_tmp(Path(entry.path))
                continue
            if not name.endswith(".pyc"):
                continue
            counts.examined += 1
            if st.st_nlink > 1:
                counts.already += 1
                continue
            src_dir = source / directory.relative_to(mirror)
            if inside is None:
                if real_source is None:
                    real_source = os.path.realpath(source)
                inside = _within(os.path.realpath(src_dir), real_source)
            if not inside:
                continue
            try:
                _share_one(Path(entry.path), st, src_dir, store, counts)
            except OSError as exc:
                if exc.errno == errno.EXDEV:  # the store is on another file system: no link can work
                    raise _CannotLink from exc
            except ValueError:
                continue


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _read_header(path: Path | str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEADER_SIZE)


def timestamp_header_matches(header: bytes, source: os.stat_result) -> bool:
    """Whether ``header`` is a timestamp ``.pyc`` header that the import system accepts for ``source``."""
    if len(header) < HEADER_SIZE or header[2:4] != b"\r\n":
        return False
    flags = int.from_bytes(header[4:8], "little")
    if flags != 0:  # hash-based (checked or not): left alone
        return False
    mtime = int.from_bytes(header[8:12], "little")
    size = int.from_bytes(header[12:16], "little")
    return mtime == (int(source.st_mtime) & 0xFFFFFFFF) and size == (source.st_size & 0xFFFFFFFF)


def store_path(store: Path, tag: str, header: bytes, digest: str) -> Path:
    """The store entry of the bytecode whose header is ``header``, of a source whose sha256 is ``digest``."""
    name = hashlib.sha256(header[:HEADER_SIZE] + bytes.fromhex(digest)).hexdigest()
    return store / tag / f"{header[:4].hex()}-{name}.pyc"


def source_digest(source: Path, expected: os.stat_result) -> str | None:
    """The sha256 of ``source``'s content, or ``None`` if it is not the file ``expected`` describes.

    The file is checked (inode, size, mtime) before and after it is read, so
    content that changed while it was hashed is never given a key.
    """
    identity = (expected.st_dev, expected.st_ino, expected.st_size, expected.st_mtime_ns)
    with open(source, "rb") as handle:
        before = os.fstat(handle.fileno())
        if (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns) != identity:
            return None
        digest = hashlib.sha256(handle.read()).hexdigest()
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != identity[2:]:
        return None
    return digest


def _share_one(pyc: Path, st: os.stat_result, src_dir: Path, store: Path, counts: _Counts) -> None:
    match = PYC_NAME.match(pyc.name)
    if match is None:
        return
    source = src_dir / f"{match['stem']}.py"
    src = os.stat(source)  # the import system follows links too
    if not stat.S_ISREG(src.st_mode):
        return
    header = _read_header(pyc)
    if not timestamp_header_matches(header, src):
        return
    shipped = src_dir / "__pycache__" / pyc.name
    if _shipped_matches(pyc, st, shipped, header, src):
        _replace_with_link(shipped, pyc)
        counts.shipped += 1
        counts.freed += st.st_blocks * 512
        return
    if st.st_mtime_ns - src.st_mtime_ns < SETTLED_NS:
        return
    digest = source_digest(source, src)
    if digest is None:
        return
    entry = store_path(store, match["tag"] + (match["opt"] or ""), header, digest)
    try:
        if _read_header(entry) != header:
            return
    except FileNotFoundError:
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(pyc, entry)
        except FileExistsError:  # another process stored the same source just now
            if _read_header(entry) != header:
                return
        else:
            counts.added += 1
            return
    _replace_with_link(entry, pyc)
    counts.stored += 1
    counts.freed += st.st_blocks * 512


def _shipped_matches(
    pyc: Path, st: os.stat_result, shipped: Path, header: bytes, src: os.stat_result
) -> bool:
    """Whether the ``.pyc`` shipped beside the source may stand for ours.

    Its header must be ours.  Then either its bytes are ours (compiled from
    the same path: the same file, whatever its age), or it was written when
    its source had settled (older interpreters' ``marshal`` output differs
    from one compilation to the next, but it is then as trustworthy as ours).
    """
    try:
        ost = os.stat(shipped)
    except OSError:
        return False
    if not stat.S_ISREG(ost.st_mode) or _read_header(shipped) != header:
        return False
    if ost.st_size == st.st_size:
        with open(pyc, "rb") as a, open(shipped, "rb") as b:
            if a.read() == b.read():
                return True
    return ost.st_mtime_ns - src.st_mtime_ns >= SETTLED_NS


def _replace_with_link(target: Path, path: Path) -> None:
    """Make ``path`` a hard link of ``target``, atomically (a link aside, then a rename)."""
    tmp = path.with_name(f".{path.name}.share-{os.getpid()}-{next(_counter)}.tmp")
    os.link(target, tmp)
    try:
        os.replace(tmp, path)
    finally:
        # Gone after a rename; still there if it failed, or if ``path`` already was a
        # link of ``target`` (another process shared it first): rename() then does nothing.
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _drop_stale_tmp(path: Path) -> None:
    """Remove a temporary link that a killed process left (never one a live process is using)."""
    match = _TMP.match(path.name)
    if match is None or int(match.group(1)) == os.getpid():
        return
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            path.unlink()
    except OSError:
        return


def store_entries(store: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Store entries and their ``stat``; an entry with ``st_nlink == 1`` is linked by no mirror."""
    for tag in _scan(store):
        if not tag.is_dir(follow_symlinks=False):
            continue
        for entry in _scan(Path(tag.path)):
            if not entry.name.endswith(".pyc"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield Path(entry.path), st
