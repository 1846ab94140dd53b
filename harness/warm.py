"""Warm start: re-run an unchanged cell's tests without compiling, solving or building.

Most runs of a cell change nothing but the code under test... and when that
code is compiled, even that is a rebuild.  Still, a full run costs a
compile of the manifests, a read of every lock, a check of every prefix, a
source fingerprint and rattler's import: a few hundred milliseconds before
the first test starts.  The warm start skips all of it when it can *prove*
nothing changed, in the way ``git status`` and ``make`` do: by stat data.

A full ``harness test`` that prepared a cell writes its **record**
(``<cache>/warm/<cell>.json``) while it holds the cell's lock:

- ``inputs``: every path whose content or absence decided the cell, taken
  *before* the run read it: the manifest and matrix files and the paths probed
  to find them (:mod:`harness.inputs`), the source tree (every file and
  directory, git's index and exclude files), each local channel's repodata,
  the ``PATH`` directories and pyenv's versions (the offline channel's
  interpreters), the NVIDIA driver's version file, and the harness's and
  rattler's own code.
- ``outputs``: the lock and its sidecar, every prefix's ``conda-meta`` and
  markers, the build artifact: taken *after* preparing, under the lock.
- ``env``: the environment variables the run depends on (``HARNESS_*``,
  ``CONDA_*``, ``PIXI_*``, ``RATTLER_*``, ``PYENV_*``, ``XDG_*``, ``PATH``,
  ``HOME`` and the variables the package's build configuration names).
- how to run the tests (:class:`harness.execute.TestPlan` without its
  environment, which is recomputed from the prefix's activation cache).

The command line ``harness test [--from ...] CELLS`` also gets an **index**
entry mapping that invocation (directory, sources, patterns, GPU policy) to
its records.  The next identical invocation reads the index, compares every
entry with ``os.stat`` (kind, mtime, ctime, size and inode: ctime cannot be
set back, and every atomic rewrite is a new inode), and only if all match
runs :func:`harness.execute.execute` directly, holding each cell's lock as a
full run does.  Anything else (a changed or new file, a missing record, a
busy lock, ``--update``) takes the full path, which rewrites the record.

Racy inputs: an input modified less than two seconds before the record's
snapshot could change again within the file system's timestamp granularity
without a visible difference, so such a record is not trusted (the full path
runs and records it again), as git does for its index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import inputs
from harness.inputs import IGNORED_DIRS, Entry, entry_of, stat_entry

if TYPE_CHECKING:
    from harness.cache import Cache
    from harness.cell import Cell
    from harness.execute import TestPlan
    from harness.launch import Launched
    from harness.report import RunReport
    from harness.stages import PreparedCell

FORMAT = 1
RACY_NS = 2_000_000_000
RACY_ENV = "HARNESS_WARM_RACY_NS"  # the window, for tests that cannot wait it out
WATCHED_PREFIXES = ("HARNESS_", "CONDA_", "PIXI_", "RATTLER_", "PYENV_", "XDG_")
WATCHED_NAMES = ("PATH", "HOME")
DIR_NAME = "warm"
INDEX_ENV = "HARNESS_WARM_DIR"
DISABLE_ENV = "HARNESS_NO_WARM"
_SKIP_IN_TREE = (".git",)
_NVIDIA = "/proc/driver/nvidia/version"
_RECORD_FIELDS: dict[str, type] = {
    "cell": str, "cache_root": str, "taken_ns": int, "inputs": dict, "outputs": dict, "env": dict,
    "roles": dict, "plan": dict, "stages": list, "extra_env": dict, "activation_env": dict,
}


# -- what a run saw ------------------------------------------------------------------------------


class Seen:
    """The cell's inputs as they were before the run read them."""

    __slots__ = ("entries", "taken_ns")

    def __init__(self, entries: dict[str, Entry], taken_ns: int) -> None:
        self.entries = entries
        self.taken_ns = taken_ns


def watched_env(environ: Mapping[str, str], names: Iterable[str] = ()) -> dict[str, str | None]:
    """The environment variables a cell's preparation depends on, with their values."""
    out: dict[str, str | None] = {
        k: v for k, v in environ.items() if k.startswith(WATCHED_PREFIXES) or k in WATCHED_NAMES
    }
    for name in names:
        out[name] = environ.get(name)
    out.pop(INDEX_ENV, None)
    return dict(sorted(out.items()))


def _git_entries(root: str) -> dict[str, Entry] | None:
    """What decides which files git lists under ``root``, or ``None`` outside a checkout.

    The source fingerprint lists files with ``git ls-files``: its answer
    changes with the index, the ``.gitignore`` files from the top of the
    checkout down, ``info/exclude`` and the global excludes file, wherever
    they live (the checkout may start above ``root``; ``.git`` may be a file).
    """
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--absolute-git-dir", "--show-toplevel"],
            cwd=root, capture_output=True, text=True, check=False, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != 2:
        return None
    git_dir, top = Path(lines[0]), Path(lines[1])
    paths = [git_dir / "index", git_dir / "HEAD", git_dir / "info" / "exclude"]
    here = Path(root)
    paths += [d / ".gitignore" for d in (here, *here.parents) if d == top or top in d.parents]
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths += [Path(config) / "git" / "ignore", Path.home() / ".gitconfig"]
    return {str(path): stat_entry(path) for path in paths}


def _listing(path: str, pruned: bool) -> str | None:
    """A digest of a directory's entry names (``None`` if it is not a readable directory).

    Directories are recorded by what they hold, not by their mtime: another
    tool creating and removing its own build directory beside the sources
    changes the mtime but not the names that matter.
    """
    import hashlib

    try:
        with os.scandir(path) as it:
            names = sorted(
                e.name
                for e in it
                if e.name not in _SKIP_IN_TREE
                and not (pruned and _ignored(e.name) and e.is_dir(follow_symlinks=False))
            )
    except OSError:
        return None
    return hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _ignored(name: str) -> bool:
    return (name in IGNORED_DIRS and name != ".git") or name.endswith(".egg-info")


def tree_entries(root: Path, skip: Iterable[Path] = ()) -> dict[str, Entry]:
    """Every file and directory under ``root`` (symlinks not followed), minus prefixes and caches.

    Files are recorded by stat data, directories by the names they hold
    (:func:`_listing`).  Pruned: ``.git`` (what decides git's listing is
    recorded instead: :func:`_git_entries`), directories holding a ``CACHEDIR.TAG`` (prefixes, the
    cache root) and ``skip``.  Outside a git checkout, the source fingerprint
    walks the tree and ignores build and tool directories (``build``,
    ``*.egg-info``, ``.tox``...); those are pruned here too, so that another
    tool building in the tree does not cost a full run.  In a checkout
    nothing else is pruned: git decides what the fingerprint lists, and a
    record may be too cautious, never blind.
    """
    out: dict[str, Entry] = {}
    skipped = {os.path.abspath(p) for p in skip}
    root_s = os.path.abspath(root)
    if stat_entry(root_s, follow=False) is None or not os.path.isdir(root_s):
        out[root_s] = stat_entry(root_s, follow=False)
        return out
    git = _git_entries(root_s)
    out.update(git or {})
    pruned = git is None
    stack = [root_s]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                children = list(it)
        except OSError:
            continue
        if any(c.name == "CACHEDIR.TAG" for c in children) and here != root_s:
            tag = os.path.join(here, "CACHEDIR.TAG")
            out[tag] = stat_entry(tag)
            continue
        out[here] = ["D", _listing(here, pruned) or "", int(pruned)]
        for child in children:
            if child.name in _SKIP_IN_TREE or child.path in skipped:
                continue
            if pruned and _ignored(child.name) and child.is_dir(follow_symlinks=False):
                continue
            if child.is_dir(follow_symlinks=False):
                stack.append(child.path)
                continue
            try:
                out[child.path] = entry_of(child.stat(follow_symlinks=False))
            except OSError:
                continue
    return out


def _code_entries() -> dict[str, Entry]:
    """The harness's own modules and rattler's installed packages: new code, new decisions."""
    from importlib.util import find_spec

    out: dict[str, Entry] = {}
    here = Path(__file__).parent
    for path in sorted(here.rglob("*.py")):
        out[str(path)] = stat_entry(path)
    for name in ("rattler", "rattler_build"):
        spec = find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            out[os.path.abspath(location)] = stat_entry(location)
    return out


def _machine_entries(environ: Mapping[str, str]) -> dict[str, Entry]:
    """What the offline channel and the GPU gate read from the machine."""
    out: dict[str, Entry] = {}
    for directory in environ.get("PATH", "").split(os.pathsep):
        if directory:
            out[os.path.abspath(directory)] = stat_entry(directory)
    pyenv = environ.get("PYENV_ROOT") or os.path.join(os.path.expanduser("~"), ".pyenv")
    out[os.path.join(pyenv, "versions")] = stat_entry(os.path.join(pyenv, "versions"))
    out[_NVIDIA] = stat_entry(_NVIDIA)
    return out


def forget_record(cache: Cache, cell: Cell) -> Seen:
    """Drop ``cell``'s record (the run may fail) and snapshot its inputs before they are read.

    Called under the cell's lock, before :func:`harness.stages.prepare`.
    """
    record_path(cache, cell.id).unlink(missing_ok=True)
    taken = time.time_ns()
    entries: dict[str, Entry] = {}
    if cell.package is not None:
        entries.update(tree_entries(cell.package.source_dir, skip=[cache.root]))
    entries.update(_channel_entries(cell))
    entries.update(_machine_entries(os.environ))
    entries.update(_code_entries())
    return Seen(entries, taken)


def _channel_entries(cell: Cell) -> dict[str, Entry]:
    from harness.channels import _REPODATA_FILES, resolve_channels

    out: dict[str, Entry] = {}
    for channel in resolve_channels(cell.channels, cell.root, manifest=cell.manifest):
        if channel.local_path is None:
            continue
        for subdir in (cell.platform, "noarch"):
            for name in _REPODATA_FILES:
                path = channel.local_path / subdir / name
                out[str(path)] = stat_entry(path)
    return out


def _output_entries(cache: Cache, prepared: PreparedCell) -> dict[str, Entry]:
    from harness.lock import lock_path, sidecar_path
    from harness.prefix import INSTALLED_MARKER, meta_dir

    out: dict[str, Entry] = {}
    for path in (lock_path(cache, prepared.cell.id), sidecar_path(cache, prepared.cell.id)):
        out[str(path)] = stat_entry(path)
    for prefix in prepared.prefixes.values():
        meta = meta_dir(prefix)
        for path in (prefix, meta, meta / INSTALLED_MARKER, meta / "history"):
            out[str(path)] = stat_entry(path)
        from harness.activation import CACHE_NAME

        out[str(meta / CACHE_NAME)] = stat_entry(meta / CACHE_NAME)
    if prepared.artifact is not None:
        directory = prepared.artifact.directory
        out[str(directory)] = stat_entry(directory)
        for child in sorted(directory.iterdir()):
            if child.is_file():
                out[str(child)] = stat_entry(child)
    return out


def record_path(cache: Cache, cell_id: str) -> Path:
    return cache.root / DIR_NAME / f"{cell_id}.json"


def write_record(
    cache: Cache,
    prepared: PreparedCell,
    plan: TestPlan,
    seen: Seen,
    *,
    report: RunReport,
    extra_env: Mapping[str, str] | None,
) -> Path:
    """Record a prepared cell (under its lock, before its tests run)."""
    from harness.activation import CACHE_NAME
    from harness.build.driver import outside_env
    from harness.cache import atomic_write_json
    from harness.stages import IMPORT_ROLE, TEST_ROLE

    cell = prepared.cell
    names = sorted(outside_env(cell, os.environ)) if cell.package is not None else []
    roles = {}
    for role in (TEST_ROLE, IMPORT_ROLE):
        prefix = prepared.prefixes.get(role)
        if prefix is not None:
            roles[role] = {
                "activation": str(prefix / "conda-meta" / CACHE_NAME),
                "records_hash": prepared.records_hashes[role],
                "prefix": str(prefix),
            }
    stages = [
        [r.stage, r.reason]
        for r in report.select(cell=cell.id)
        if r.kind != "test" and r.status in ("done", "cached")
    ]
    record = {
        "format": FORMAT,
        "cell": cell.id,
        "cache_root": str(cache.root),
        "taken_ns": seen.taken_ns,
        "inputs": seen.entries,
        "outputs": _output_entries(cache, prepared),
        "env_names": names,
        "env": watched_env(os.environ, names),
        "activation_env": dict(cell.activation_env),
        "roles": roles,
        "stages": stages,
        "extra_env": dict(extra_env or {}),
        "plan": {
            "command": plan.command,
            "cwd": str(plan.cwd),
            "junit": str(plan.junit),
            "logs": str(plan.logs),
            "pycache": None if plan.pycache is None else str(plan.pycache),
            "import_check": None
            if plan.import_check is None
            else {"command": plan.import_check.command, "package": plan.import_check.package},
        },
    }
    from harness.gc import build_marker, cell_marker

    used = [cell_marker(cache, cell.id)]
    if prepared.artifact is not None:
        used.append(build_marker(cache, prepared.artifact.package, prepared.artifact.key))
    record["used"] = [str(p) for p in used]  # touched by each warm run, as prepare would
    path = record_path(cache, cell.id)
    atomic_write_json(path, record)
    return path


# -- the invocation index ------------------------------------------------------------------------


class Invocation:
    """``harness test`` as typed: what the index is keyed by."""

    __slots__ = ("gpu_policy", "patterns", "sources")

    def __init__(self, sources: tuple[str, ...], patterns: tuple[str, ...], gpu_policy: str) -> None:
        self.sources = sources
        self.patterns = patterns
        self.gpu_policy = gpu_policy

    def key(self) -> str:
        from harness import __version__
        from harness.frozen import digest

        return digest(
            {
                "format": FORMAT,
                "version": __version__,
                "cwd": os.getcwd(),
                "sources": [os.path.abspath(s) for s in self.sources],
                "patterns": list(self.patterns),
                "gpu": self.gpu_policy,
            },
            length=24,
        )


def index_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$HARNESS_WARM_DIR``, else ``warm/index`` of ``$HARNESS_CACHE_DIR``, else the user cache."""
    env = os.environ if environ is None else environ
    if env.get(INDEX_ENV):
        return Path(env[INDEX_ENV]).expanduser()
    if env.get("HARNESS_CACHE_DIR"):
        return Path(env["HARNESS_CACHE_DIR"]).expanduser() / DIR_NAME / "index"
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "variant-harness" / DIR_NAME


def write_index(invocation: Invocation, records: Sequence[Path], taken_ns: int) -> Path:
    """Map ``invocation`` to its cells' records, with the compile's inputs (read after ``taken_ns``)."""
    from harness.cache import atomic_write_json

    path = index_dir() / f"{invocation.key()}.json"
    atomic_write_json(
        path,
        {
            "format": FORMAT,
            "taken_ns": taken_ns,
            "inputs": inputs.noted(),
            "records": [str(p) for p in records],
        },
    )
    return path


def drop_index(invocation: Invocation) -> None:
    (index_dir() / f"{invocation.key()}.json").unlink(missing_ok=True)


def load_cached(kind: str, material: Any) -> Any | None:
    """A value stored by :func:`store_cached` whose inputs are all unchanged, else ``None``."""
    from harness.frozen import digest

    stored = _read_json(index_dir() / f"{kind}-{digest(material, length=24)}.json")
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        return None
    if changed(stored.get("inputs", {}), stored.get("taken_ns", 0)) is not None:
        return None
    return stored.get("value")


def store_cached(kind: str, material: Any, value: Any, noted: Mapping[str, Entry], taken_ns: int) -> None:
    """Keep ``value`` (computed from the files in ``noted``, read after ``taken_ns``) for reuse."""
    from harness.cache import atomic_write_json
    from harness.frozen import digest

    entries = {**noted, **_code_entries()}
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        atomic_write_json(
            index_dir() / f"{kind}-{digest(material, length=24)}.json",
            {"format": FORMAT, "taken_ns": taken_ns, "inputs": entries, "value": value},
        )


# -- checking --------------------------------------------------------------------------------------


def changed(entries: Mapping[str, Entry], taken_ns: int | None) -> str | None:
    """The first entry that no longer matches (or is racy against ``taken_ns``), or ``None``."""
    racy = int(os.environ.get(RACY_ENV) or RACY_NS)
    for path, want in entries.items():
        if want is not None and want[0] == "D":
            if _listing(path, bool(want[2])) != want[1]:
                return f"{path}: entries added or removed"
            continue
        have = stat_entry(path, follow=not (want is not None and want[0] == "l"))
        if have != want:
            if want is None:
                return f"{path} appeared"
            if have is None:
                return f"{path} disappeared"
            return f"{path} changed"
        if taken_ns is not None and want is not None and max(want[1], want[2]) >= taken_ns - racy:  # type: ignore[type-var,operator]
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


# -- replaying -------------------------------------------------------------------------------------


class Args:
    """The few options of ``harness test`` a warm start understands (anything else: full path)."""

    __slots__ = ("cells", "gpu", "quiet", "sources")

    def __init__(self) -> None:
        self.cells: list[str] = []
        self.sources: list[str] = []
        self.gpu = "skip"
        self.quiet = False


_WITH_VALUE = {"--from": "sources", "--gpu": "gpu"}


def _parse(argv: Sequence[str]) -> tuple[Args, list[str]] | None:
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


def invocation_of(args: Args) -> Invocation:
    return Invocation(tuple(args.sources), tuple(args.cells), args.gpu)


def try_warm(argv: Sequence[str]) -> int | None:
    """Run ``harness test ...`` from its records when nothing changed; ``None`` = take the full path."""
    if os.environ.get(DISABLE_ENV):
        return None
    parsed = _parse(argv)
    if parsed is None:
        return None
    args, extra = parsed
    index = _read_json(index_dir() / f"{invocation_of(args).key()}.json")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return None
    if changed(index.get("inputs", {}), index.get("taken_ns", 0)) is not None:
        return None
    try:
        records = [_read_json(Path(p)) for p in index.get("records", [])]
        if not records or any(check_record(r) is not None for r in records):
            return None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # a record edited by hand: the full path writes a new one
    with ExitStack() as stack:
        for record in records:
            if not _try_lock(stack, _lock_file(record)):
                return None
        # Another run may have changed a cell between the check and the lock.
        if any(check_record(_read_json(_record_file(r))) is not None for r in records):
            return None
        # The first command starts now, and the modules that read its results
        # load while it runs: on two cores the import time disappears.
        first = _launch_first(records[0], extra)
        if first is None:
            return None
        try:
            return _replay(records, extra, quiet=args.quiet, launched=first)
        finally:
            if first.proc.poll() is None:  # an error before it was read: never leave it behind
                first.proc.kill()
                first.proc.wait()


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _cache_root(record: Mapping[str, Any]) -> Path:
    return Path(record["cache_root"])


def _lock_file(record: Mapping[str, Any]) -> Path:
    return _cache_root(record) / "locks" / f"cell-{record['cell']}.lock"


def _record_file(record: Mapping[str, Any]) -> Path:
    return _cache_root(record) / DIR_NAME / f"{record['cell']}.json"


def _try_lock(stack: ExitStack, path: Path) -> bool:
    """Take the cell's lock (the same ``flock`` as :class:`filelock.FileLock`) without waiting."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # filelock removes its file on release: a lock on a file that is no
        # longer at ``path`` excludes nobody.
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return False

    def release() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    stack.callback(release)
    return True


def _env(role: Mapping[str, Any], extra: Mapping[str, str]) -> dict[str, str] | None:
    from harness.frozen import digest
    from harness.launch import clean_base_env, expand

    base = clean_base_env()
    stored = _read_json(Path(role["activation"]))
    key = digest({"records_hash": role["records_hash"], "prefix": role["prefix"], "PATH": base.get("PATH", "")})
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    unset = set(stored.get("unset", []))
    env = {k: v for k, v in base.items() if k not in unset}
    env.update(stored["delta"])
    for name, value in extra.items():
        env[name] = expand(str(value), env)
    return env


def plan_of(record: Mapping[str, Any]) -> TestPlan | None:
    """The test plan a record describes, with environments recomputed as a full run would."""
    from harness.execute import ImportCheck, TestPlan

    roles = record["roles"]
    test_env = _env(roles["test"], record["activation_env"]) if "test" in roles else None
    if test_env is None:
        return None
    plan = record["plan"]
    check = None
    if plan["import_check"] is not None:
        import_env = _env(roles["import"], record["activation_env"]) if "import" in roles else None
        if import_env is None:
            return None
        check = ImportCheck(plan["import_check"]["command"], import_env, plan["import_check"]["package"])
    return TestPlan(
        cell=record["cell"],
        command=plan["command"],
        cwd=Path(plan["cwd"]),
        env=test_env,
        junit=Path(plan["junit"]),
        logs=Path(plan["logs"]),
        import_check=check,
        pycache=Path(plan["pycache"]) if plan.get("pycache") else None,
    )


def _launch_first(record: Mapping[str, Any], extra_args: Sequence[str]) -> Launched | None:
    """Start the first command :func:`harness.execute.execute` will run for ``record``."""
    from harness.errors import HarnessError
    from harness.launch import launch

    roles, plan = record["roles"], record["plan"]
    check = plan["import_check"]
    role = "import" if check is not None else "test"
    if role not in roles:
        return None
    env = _env(roles[role], record["activation_env"])
    if env is None:
        return None
    logs = Path(plan["logs"])
    try:
        return launch(
            record["cell"],
            check["command"] if check is not None else plan["command"],
            env={**env, **record["extra_env"]},
            cwd=Path(plan["cwd"]),
            extra_args=() if check is not None else extra_args,
            junit_path=Path(plan["junit"]),
            log_path=logs / ("import-check.log" if check is not None else "test.log"),
            pycache=Path(plan["pycache"]) if plan.get("pycache") else None,
        )
    except HarnessError:
        return None  # the full path reports it as the cell's error


def _replay(
    records: Sequence[Mapping[str, Any]],
    extra_args: Sequence[str],
    *,
    quiet: bool,
    launched: Launched | None = None,
) -> int | None:
    from harness.cache import Cache
    from harness.execute import execute
    from harness.report import CACHED, RunReport
    from harness.summary import exit_code, render_plain, summary_rows

    plans = [plan_of(record) for record in records]
    if any(plan is None for plan in plans):
        return None  # cannot happen after _launch_first succeeded, but never run half a record
    listener = None if quiet else _Lines()
    report = RunReport(listener=listener)
    outcomes = {}
    for record, plan in zip(records, plans, strict=True):
        for marker in record.get("used", []):  # `harness gc --older-than` sees the cell in use
            with contextlib.suppress(OSError):
                os.utime(marker)
        for stage, reason in record["stages"]:
            report.record(record["cell"], stage, CACHED, f"warm: {reason}" if reason else "warm")
        if not quiet:
            print(f"[harness] {record['cell']} warm start: {len(record['stages'])} stages cached, "
                  f"{len(record['inputs']) + len(record['outputs'])} paths unchanged",
                  file=sys.stderr, flush=True)
        outcomes[record["cell"]] = execute(
            plan, report, extra_args=extra_args, extra_env=record["extra_env"], launched=launched
        )
        launched = None  # only the first command was started early
    report.extra["tests"] = {cid: o.to_json() for cid, o in outcomes.items()}
    report.extra["skipped"] = {}
    report.extra["errors"] = {}
    report.extra["warm"] = True
    paths = []
    for root in dict.fromkeys(_cache_root(r) for r in records):
        paths.append(report.write(Cache(root)))
    rows = summary_rows(report, outcomes, [r["cell"] for r in records])
    sys.stdout.write("\n")
    render_plain(rows, sys.stdout)
    sys.stdout.flush()
    for path in paths:
        print(f"report: {path}", file=sys.stderr)
    return exit_code(rows)


class _Lines:
    """Progress as plain lines on stderr: the full path's format, without rich."""

    def start(self, cell: str, stage: str) -> None:
        print(f"[harness] {cell} {stage} ...", file=sys.stderr, flush=True)

    def end(self, cell: str, stage: str, status: str, reason: str, duration: float) -> None:
        from harness.progress import stage_line

        print(stage_line(cell, stage, status, reason, duration), file=sys.stderr, flush=True)
