"""Named kill points: the moments where a ``kill -9`` must leave no state a later run trusts.

DESIGN invariant 4 says a process killed at *any* moment leaves nothing that
a later run would trust.  Random kills rarely land on the few instructions
that matter (between a rename and the marker that follows it), so the code
names those moments with :func:`point`, and the fault-injection tests kill
the process exactly there::

    HARNESS_FAULT_KILL=prefix.linked      # the first time the point is reached
    HARNESS_FAULT_KILL=prefix.linked@2    # the second time (e.g. the second prefix)

The process then sends itself ``SIGKILL``: no ``finally`` block, no ``atexit``
handler, no flush runs, exactly as when the machine or the OOM killer stops it.
``HARNESS_FAULT_TRACE=<file>`` appends the name of every point reached to
``<file>``, so a test can enumerate the points a clean run passes through.

The variables are read once per process (again in a forked child), so an
unset variable costs one comparison per point.  This module imports nothing
but :mod:`os` and :mod:`signal`: it is imported by the stages' modules.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "HARNESS_FAULT_KILL"
TRACE_ENV = "HARNESS_FAULT_TRACE"

#: Every point, with what has happened when it is reached (and what has not yet).
POINTS: tuple[tuple[str, str], ...] = (
    ("stages.roles-solved", "build/host roles solved, their lock not yet written"),
    ("stages.test-solved", "test role solved, the lock holding it not yet written"),
    ("lock.writing", "the lock's temporary file is about to be written"),
    ("lock.tmp-written", "the lock's temporary file is written and synced, not renamed"),
    ("lock.replaced", "the new lock is in place, its inputs sidecar still the old one"),
    ("prefix.marked-incomplete", "the prefix is marked incomplete, rattler has not started"),
    ("prefix.linked", "rattler has installed the prefix, it is not yet marked installed"),
    ("prefix.marked-installed", "installed marker written, incomplete marker not yet removed"),
    ("build.dir-marked", "the build directory is marked incomplete, the backend not started"),
    ("build.backend-done", "the backend has staged the files, nothing is packaged yet"),
    ("package.assembled", "the archive is written into the temporary channel, not indexed"),
    ("build.artifact-meta", "the temporary channel is indexed, artifact.json not yet written"),
    ("build.renaming", "artifact.json is written, the temporary directory not yet renamed"),
    ("build.renamed", "the artifact is published, the build directory still marked incomplete"),
    ("pypi.installed", "uv has installed the PyPI packages, their marker not yet written"),
)
NAMES: frozenset[str] = frozenset(name for name, _ in POINTS)

_loaded = False
_target: str | None = None
_nth = 1
_hits = 0
_trace: str | None = None


def _warn(message: str) -> None:
    os.write(2, f"[harness] {KILL_ENV}: {message}\n".encode())


def _load() -> None:
    """Read the variables (once per process): a typo is reported, never silently ignored."""
    global _loaded, _target, _nth, _hits, _trace
    _loaded, _target, _nth, _hits = True, None, 1, 0
    _trace = os.environ.get(TRACE_ENV) or None
    spec = os.environ.get(KILL_ENV, "").strip()
    if not spec:
        return
    name, _, count = spec.partition("@")
    if name not in NAMES:
        _warn(f"unknown point {name!r} (known: {', '.join(n for n, _ in POINTS)})")
        return
    if count:
        if not count.isdigit() or int(count) < 1:
            _warn(f"{spec!r}: the count after '@' must be a positive integer")
            return
        _nth = int(count)
    _target = name


def _forget() -> None:
    global _loaded
    _loaded = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)  # a forked child counts its own hits


def point(name: str) -> None:
    """Kill this process here if ``HARNESS_FAULT_KILL`` names this point (and this hit)."""
    global _hits
    if not _loaded:
        _load()
    if _trace is not None:
        fd = os.open(_trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if name != _target:
        return
    _hits += 1
    if _hits == _nth:
        os.kill(os.getpid(), signal.SIGKILL)
