"""Warm start: re-run an unchanged cell's tests without compiling, solving or building.

Most runs of a cell change nothing but the code under test... and when that
code is compiled, even that is a rebuild.  Still, a full run costs a
compile of the manifests, a read of every lock, a check of every prefix, a
source fingerprint and rattler's import: a few hundred milliseconds before
the first test starts.  The warm start skips all of it when it can *prove*
nothing changed, in the way ``git status`` and ``make`` do: by stat data.

A full ``harness test`` writes, for each cell it prepared, a **record**
(:mod:`harness.warm`): every path whose content or absence decided the cell
(manifests, the source tree, channels, the machine's interpreters, the
harness's own code), every output it relies on (lock, prefixes, artifact),
the environment variables it read and how to run the tests.  The command
line then gets a **snapshot** in the index directory: the records of all its
cells, the activated environments of their prefixes and the argv of their
test commands, in one :mod:`marshal` file keyed by the invocation (directory,
sources, patterns, GPU policy).

The next identical invocation (this module) reads that one file, takes each
cell's lock without waiting, compares every entry with ``os.stat`` (kind,
mtime, ctime, size and inode: ctime cannot be set back, and every atomic
rewrite is a new inode) and, only if all match, starts the first test
command at once.  The modules that read its results (JUnit, the run report,
the summary) load while it runs.  Anything else (a changed or new file, a
missing record, a busy lock, an option it does not know) returns ``None``:
the full path runs and records again.

This module runs before anything else in a warm ``harness test``, so it
imports nothing a warm run can do without: no :mod:`json`, :mod:`pathlib`,
:mod:`subprocess`, :mod:`hashlib`, :mod:`re` or :mod:`typing`, which cost
more together than everything else the warm start does.  The snapshot is
:mod:`marshal` data in the user's own cache, trusted as the interpreter
trusts the ``.pyc`` files it loads the same way.

Racy inputs: an input modified less than two seconds before the record's
snapshot could change again within the file system's timestamp granularity
without a visible difference, so such a record is not trusted (the full path
runs and records it again), as git does for its index.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

try:
    import fcntl
except ImportError:  # not a POSIX system: no warm start, the full path runs
    fcntl = None  # type: ignore[assignment]

from harness.inputs import IGNORED_DIRS, stat_entry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from harness.launch import Launched

FORMAT = 2
RACY_NS = 2_000_000_000
RACY_ENV = "HARNESS_WARM_RACY_NS"  # the window, for tests that cannot wait it out
WATCHED_PREFIXES = ("HARNESS_", "CONDA_", "PIXI_", "RATTLER_", "PYENV_", "XDG_")
WATCHED_NAMES = ("PATH", "HOME")
DIR_NAME = "warm"
INDEX_ENV = "HARNESS_WARM_DIR"
DISABLE_ENV = "HARNESS_NO_WARM"
SNAPSHOT_SUFFIX = ".warm"
# marshal's format and the bytecode it may hold change with the interpreter.
PYTHON = f"{sys.implementation.cache_tag}-{marshal.version}"
SKIP_IN_TREE = (".git",)  # what decides git's listing is recorded instead
_RECORD_FIELDS: dict[str, type] = {
    "cell": str, "cache_root": str, "taken_ns": int, "inputs": dict, "outputs": dict, "env": dict,
    "roles": dict, "plan": dict, "stages": list, "extra_env": dict, "activation_env": dict,
}


# -- what is compared ------------------------------------------------------------------------------


def watched_env(environ: Mapping[str, str], names: Iterable[str] = ()) -> dict[str, str | None]:
    """The environment variables a cell's preparation depends on, with their values."""
    out: dict[str, str | None] = {
        k: v for k, v in environ.items() if k.startswith(WATCHED_PREFIXES) or k in WATCHED_NAMES
    }
    for name in names:
        out[name] = environ.get(name)
    out.pop(INDEX_ENV, None)
    return dict(sorted(out.items()))


def listing(path: str, pruned: bool) -> str | None:
    """A directory's entry names, sorted and joined (``None`` if it is not a readable directory).

    Directories are recorded by what they hold, not by their mtime: another
    tool creating and removing its own build directory beside the sources
    changes the mtime but not the names that matter.
    """
    try:
        with os.scandir(path) as it:
            names = sorted(
                e.name
                for e in it
                if e.name not in SKIP_IN_TREE
                and not (pruned and ignored(e.name) and e.is_dir(follow_symlinks=False))
            )
    except OSError:
        return None
    return "\0".join(names)


def ignored(name: str) -> bool:
    """A build or tool directory that a source walk outside git leaves out."""
    return (name in IGNORED_DIRS and name != ".git") or name.endswith(".egg-info")


def changed(entries: Mapping[str, Any], taken_ns: int | None) -> str | None:
    """The first entry that no longer matches (or is racy against ``taken_ns``), or ``None``."""
    racy = int(os.environ.get(RACY_ENV) or RACY_NS)
    for path, want in entries.items():
        if want is not None and want[0] == "D":
            if listing(path, bool(want[2])) != want[1]:
                return f"{path}: entries added or removed"
            continue
        have = stat_entry(path, follow=not (want is not None and want[0] == "l"))
        if have != want:
            if want is None:
                return f"{path} appeared"
            if have is None:
                return f"{path} disappeared"
            return f"{path} changed"
        if taken_ns is not None and want is not None and max(want[1], want[2]) >= taken_ns - racy:
            return f"{path} changed just before the last run"
    return None


def check_record(record: Any) -> str | None:
    """Why ``record`` cannot be replayed, or ``None``."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "no record"
    plan = record.get("plan")
    if not all(isinstance(record.get(k), t) for k, t in _RECORD_FIELDS.items()) or not all(
        isinstance(plan.get(k), str) for k in ("command", "cwd", "junit", "logs")  # type: ignore[union-attr]
    ):
        return "record unreadable"  # edited by hand: the full path writes a new one
    if watched_env(os.environ, record.get("env_names", [])) != record.get("env"):
        return "environment changed"
    return changed(record["inputs"], record["taken_ns"]) or changed(record["outputs"], None)


def stale(snapshot: Mapping[str, Any]) -> str | None:
    """Why a snapshot cannot be replayed (its compile's inputs, its records, their cells), or ``None``."""
    reason = changed(snapshot["inputs"], snapshot["taken_ns"])
    if reason is not None:
        return reason
    for cell in snapshot["cells"]:
        # The record file itself: a record edited by hand or removed by gc is never replayed.
        if stat_entry(cell["record_file"]) != cell["record_entry"]:
            return f"{cell['record_file']} changed"
        reason = check_record(cell)
        if reason is not None:
            return reason
    return None


# -- the invocation ------------------------------------------------------------------------------


class Args:
    """The few options of ``harness test`` a warm start understands (anything else: full path)."""

    __slots__ = ("cells", "gpu", "quiet", "sources")

    def __init__(self) -> None:
        self.cells: list[str] = []
        self.sources: list[str] = []
        self.gpu = "skip"
        self.quiet = False


_WITH_VALUE = {"--from": "sources", "--gpu": "gpu"}


def parse(argv: Sequence[str]) -> tuple[Args, list[str]] | None:
    """``test [--from SRC]... [--gpu P] [-q] CELL... [-- ARGS]`` by hand: argparse costs a warm run 7 ms."""
    own = list(argv)
    extra: list[str] = []
    if "--" in own:
        i = own.index("--")
        own, extra = own[:i], own[i + 1 :]
    if own[:1] != ["test"]:
        return None
    args = Args()
    words = iter(own[1:])
    for word in words:
        name, eq, value = word.partition("=")
        if name in _WITH_VALUE:
            if not eq:
                value = next(words, "")
            if not value:
                return None
            if name == "--from":
                args.sources.append(value)
            else:
                args.gpu = value
        elif word in ("-q", "--quiet"):
            args.quiet = True
        elif word.startswith("-"):
            return None  # --update, --repair, --help, anything new: the full path decides
        else:
            args.cells.append(word)
    return (args, extra) if args.cells else None


def material(sources: Sequence[str], patterns: Sequence[str], gpu_policy: str) -> str:
    """What identifies ``harness test`` as typed: the same text means the same cells."""
    from harness import __version__

    fields = [
        f"format={FORMAT}", f"version={__version__}", f"python={sys.prefix}", f"cwd={os.getcwd()}",
        *(f"source={os.path.abspath(s)}" for s in sources),
        *(f"pattern={p}" for p in patterns),
        f"gpu={gpu_policy}",
    ]
    return "\n".join(fields)


def key(text: str) -> str:
    """A file name for ``text`` (64-bit FNV-1a; the snapshot holds ``text`` to rule out collisions)."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def index_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$HARNESS_WARM_DIR``, else ``warm/index`` of ``$HARNESS_CACHE_DIR``, else the user cache."""
    env = os.environ if environ is None else environ
    if env.get(INDEX_ENV):
        return os.path.expanduser(env[INDEX_ENV])
    if env.get("HARNESS_CACHE_DIR"):
        return os.path.join(os.path.expanduser(env["HARNESS_CACHE_DIR"]), DIR_NAME, "index")
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "variant-harness", DIR_NAME)


def snapshot_path(text: str) -> str:
    return os.path.join(index_dir(), key(text) + SNAPSHOT_SUFFIX)


def read_snapshot(text: str) -> dict[str, Any] | None:
    """The snapshot of the invocation ``text``, if one was written by this interpreter for it."""
    try:
        with open(snapshot_path(text), "rb") as handle:
            snapshot = marshal.loads(handle.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if (
        not isinstance(snapshot, dict)
        or snapshot.get("format") != FORMAT
        or snapshot.get("python") != PYTHON
        or snapshot.get("material") != text
    ):
        return None
    return snapshot


# -- the environment of a test command -------------------------------------------------------------


def activated_env(
    activation: Mapping[str, Any], activation_env: Mapping[str, str], base: Mapping[str, str]
) -> dict[str, str]:
    """``base`` with a prefix's activation applied (its ``unset`` and ``delta``), then the cell's
    own activation variables expanded against it: what :func:`harness.activation.activation_env` gives."""
    from harness.launch import expand

    unset = set(activation["unset"])
    env = {k: v for k, v in base.items() if k not in unset}
    env.update(activation["delta"])
    for name, value in activation_env.items():
        env[name] = expand(str(value), env)
    return env


# -- replaying ---------------------------------------------------------------------------------------


def try_warm(argv: Sequence[str]) -> int | None:
    """Run ``harness test ...`` from its snapshot when nothing changed; ``None`` = take the full path."""
    if os.environ.get(DISABLE_ENV) or fcntl is None or not hasattr(os, "posix_spawn"):
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    args, extra = parsed
    snapshot = read_snapshot(material(args.sources, args.cells, args.gpu))
    if snapshot is None:
        return None
    locks: list[int] = []
    try:
        try:
            cells = snapshot["cells"]
            for cell in cells:
                fd = _try_lock(cell["lock"])
                if fd is None:
                    return None  # another run holds the cell: the full path waits for it
                locks.append(fd)
            if not cells or stale(snapshot) is not None:
                return None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return None  # not what this version writes: the full path writes a new one
        # The first command starts now, and the modules that read its results
        # load while it runs: on two cores the import time disappears.
        first = _launch_first(cells[0], extra)
        if first is None:
            return None
        try:
            from harness.warm import replay

            return replay(cells, extra, quiet=args.quiet, launched=first)
        finally:
            if first.proc.poll() is None:  # an error before it was read: never leave it behind
                first.proc.kill()
                first.proc.wait()
    finally:
        for fd in locks:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _try_lock(path: str) -> int | None:
    """Take a cell's lock (the same ``flock`` as :class:`filelock.FileLock`) without waiting."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # filelock removes its file on release: a lock on a file that is no
        # longer at ``path`` excludes nobody.
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def first_role(cell: Mapping[str, Any]) -> str:
    """The role whose prefix runs a cell's first command: the import check's, else the tests'."""
    return "import" if cell["plan"]["import_check"] is not None else "test"


def command_env(cell: Mapping[str, Any], role: str) -> dict[str, str]:
    """The environment of a cell's command in ``role``'s prefix, exactly as a full run builds it."""
    from harness.launch import clean_base_env, test_env

    plan = cell["plan"]
    env = activated_env(cell["activations"][role], cell["activation_env"], clean_base_env())
    return test_env({**env, **cell["extra_env"]}, plan["junit"], plan["pycache"])


def command_argv(cell: Mapping[str, Any], role: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The argv of a cell's command in ``role`` (the test command gets ``extra_args``)."""
    return [*cell["argv"][role], *(extra_args if role == "test" else ())]


def _launch_first(cell: Mapping[str, Any], extra_args: Sequence[str]) -> Launched | None:
    """Start the first command the replay of ``cell`` runs, with the environment a full run gives it."""
    from harness.launch import Launched, spawn

    role = first_role(cell)
    plan = cell["plan"]
    env = command_env(cell, role)
    argv = command_argv(cell, role, extra_args)
    junit = plan["junit"]
    try:
        os.makedirs(os.path.dirname(junit), exist_ok=True)
        os.makedirs(plan["logs"], exist_ok=True)
        try:  # noqa: SIM105 (contextlib's import is not worth it here)
            os.unlink(junit)  # a JUnit file left by an earlier run is never read as this one's
        except FileNotFoundError:
            pass
        started = time.monotonic()
        proc = spawn(argv, env=env, cwd=plan["cwd"])
    except OSError:
        return None  # the full path reports it as the cell's error
    return Launched(proc, argv, started)
