"""The source fingerprint: which files a build reads, and their content.

An artifact is keyed by its variant key *and* this fingerprint, so an edit to
any source file gives every cell a new artifact (while the build directory,
keyed by the variant alone, is reused for an incremental build).  The files
are those git would track (tracked plus untracked-but-not-ignored) in a git
checkout, else every file outside version-control, cache and build-output
directories.  Content is hashed, not mtimes: touching a file changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Directories never part of a source tree when there is no git to ask.
from harness.inputs import IGNORED_DIRS


@dataclass(frozen=True)
class SourceFingerprint:
    """The digest of a source tree, and how its file list was found (``git`` or ``walk``)."""

    digest: str
    files: int
    method: str


def _git_files(root: Path) -> list[str] | None:
    """Files git would track under ``root`` (relative), or ``None`` when ``root`` is not in a checkout."""
    try:
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=root,
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    names = [n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    # Deleted-but-tracked files are listed by --cached; they are not part of the tree.
    return sorted({n for n in names if os.path.lexists(root / n)})


def _is_cache_dir(path: Path) -> bool:
    return (path / "CACHEDIR.TAG").is_file()


def _walk_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in IGNORED_DIRS
            and not d.endswith(".egg-info")
            and not _is_cache_dir(here / d)
        )
        for name in filenames:
            if name.endswith((".pyc", ".pyo")):
                continue
            out.append((here / name).relative_to(root).as_posix())
    return sorted(out)


def source_files(root: Path) -> tuple[list[str], str]:
    """The relative paths that make up the source tree at ``root``, and the method used."""
    root = Path(root)
    files = _git_files(root)
    if files is not None:
        return files, "git"
    return _walk_files(root), "walk"


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    mode = "x" if os.access(path, os.X_OK) else "-"
    return mode + h.hexdigest()


def source_fingerprint(root: Path, exclude: tuple[Path, ...] = ()) -> SourceFingerprint:
    """Hash every source file's path, executable bit and content under ``root``.

    ``exclude`` lists directories (absolute) to leave out even when git would
    track them, for example a cache root that lives inside the source tree.
    """
    root = Path(root).resolve()
    files, method = source_files(root)
    skip = [e.resolve() for e in exclude]
    h = hashlib.sha256()
    count = 0
    for rel in files:
        path = root / rel
        if any(path == e or e in path.parents for e in skip):
            continue
        if not path.is_file() and not path.is_symlink():
            continue
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(_file_digest(path).encode() + b"\n")
        count += 1
    return SourceFingerprint(digest=h.hexdigest()[:16], files=count, method=method)
