"""What a run looked at: the files it read and the paths it probed, with their stat data.

The readers (TOML files, variant files, manifest discovery) call :func:`note`
for every path whose content *or absence* decides what cells compile to.
The warm start (:mod:`harness.warm`) records these entries after a full run
and, on the next run, compares them again instead of compiling: a file that
changed, appeared or disappeared sends the run down the full path.

An entry is ``[kind, mtime_ns, ctime_ns, size, inode, mode]`` (``kind``: ``f`` file,
``d`` directory, ``l`` a symlink recorded as itself, ``o`` other) or ``None`` for a path that does not exist.
The ctime is what makes it trustworthy: a file can be given back its old
mtime, but any write, rename or ``touch`` moves its ctime.
"""

from __future__ import annotations

import os
import stat as _stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

Entry = list[int | str] | None

# Directories a source walk outside git leaves out (build output, tool caches, VCS).
IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".harness",
        ".pixi",
        ".nox",
        ".tox",
        ".venv",
        "venv",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        "node_modules",
        "build",
        "dist",
        "_skbuild",
    }
)


_noted: dict[str, Entry] = {}


def stat_entry(path: str | os.PathLike[str], *, follow: bool = True) -> Entry:
    """The stat entry of ``path`` (``None`` when it does not exist or cannot be reached)."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None
    return entry_of(st)


def entry_of(st: os.stat_result) -> Entry:
    mode = st.st_mode
    if _stat.S_ISREG(mode):
        kind = "f"
    elif _stat.S_ISDIR(mode):
        kind = "d"
    else:
        kind = "l" if _stat.S_ISLNK(mode) else "o"
    return [kind, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode]


def note(path: str | os.PathLike[str]) -> None:
    """Remember ``path`` as an input of this process's compile, with its stat data *now*.

    Called before the content is read, so a change made while reading makes
    the recorded entry older than the file: the next run sees the difference.
    The first note of a path wins for the same reason.
    """
    key = os.path.abspath(path)
    if key not in _noted:
        _noted[key] = stat_entry(key)


def noted() -> dict[str, Entry]:
    """Every path noted so far in this process, with its entry."""
    return dict(_noted)


def forget() -> None:
    """Start a new record (each top-level command compiles once)."""
    _noted.clear()


def parents_of(paths: list[Path]) -> list[Path]:
    """The directories holding ``paths``: new files beside a manifest change its directory."""
    from pathlib import Path

    return sorted({Path(p).parent for p in paths})
