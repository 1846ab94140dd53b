"""Warm-start records: what a full run writes so that :mod:`harness.warmstart` can replay it.

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

When every cell of a command line left a record, :func:`write_index` writes
the command line's **snapshot**: its records, each prefix's activation and
each command's argv, in the one file a warm start reads.
:func:`replay` is the part of a warm start that runs after its first
command started: the tests, the JUnit file, the run report and the summary.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import inputs
from harness.inputs import Entry, entry_of, stat_entry
from harness.warmstart import (
    DIR_NAME,
    FORMAT,
    PYTHON,
    SKIP_IN_TREE,
    activated_env,
    changed,
    ignored,
    index_dir,
    listing,
    material,
    snapshot_path,
    watched_env,
)

if TYPE_CHECKING:
    from harness.cache import Cache
    from harness.cell import Cell
    from harness.execute import TestPlan
    from harness.launch import Launched
    from harness.report import RunReport
    from harness.stages import PreparedCell

_NVIDIA = "/proc/driver/nvidia/version"


# -- what a run saw ------------------------------------------------------------------------------


class Seen:
    """The cell's inputs as they were before the run read them."""

    __slots__ = ("entries", "taken_ns")

    def __init__(self, entries: dict[str, Entry], taken_ns: int) -> None:
        self.entries = entries
        self.taken_ns = taken_ns


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


def tree_entries(root: Path, skip: Iterable[Path] = ()) -> dict[str, Entry]:
    """Every file and directory under ``root`` (symlinks not followed), minus prefixes and caches.

    Files are recorded by stat data, directories by the names they hold
    (:func:`harness.warmstart.listing`).  Pruned: ``.git`` (what decides git's listing is
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
        out[here] = ["D", listing(here, pruned) or "", int(pruned)]
        for child in children:
            if child.name in SKIP_IN_TREE or child.path in skipped:
                continue
            if pruned and ignored(child.name) and child.is_dir(follow_symlinks=False):
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



# -- the invocation's snapshot ---------------------------------------------------------------------


class Invocation:
    """``harness test`` as typed: what the snapshot is keyed by."""

    __slots__ = ("gpu_policy", "patterns", "sources")

    def __init__(self, sources: tuple[str, ...], patterns: tuple[str, ...], gpu_policy: str) -> None:
        self.sources = sources
        self.patterns = patterns
        self.gpu_policy = gpu_policy

    def material(self) -> str:
        return material(self.sources, self.patterns, self.gpu_policy)


def write_index(invocation: Invocation, records: Sequence[Path], taken_ns: int) -> Path | None:
    """Write the snapshot of ``invocation`` from its cells' records (the compile read its inputs after
    ``taken_ns``); ``None`` and no snapshot when a record cannot be replayed as it stands."""
    from harness.cache import atomic_write_bytes

    cells = []
    for path in records:
        cell = _snapshot_cell(path)
        if cell is None:
            drop_index(invocation)
            return None
        cells.append(cell)
    text = invocation.material()
    snapshot = {
        "format": FORMAT,
        "python": PYTHON,
        "material": text,
        "taken_ns": taken_ns,
        "inputs": inputs.noted(),
        "cells": cells,
    }
    target = Path(snapshot_path(text))
    atomic_write_bytes(target, marshal.dumps(snapshot))
    return target


def _snapshot_cell(path: Path) -> dict[str, Any] | None:
    """A record as the warm start reads it: with its prefixes' activations and its commands' argv."""
    from harness.frozen import digest
    from harness.launch import clean_base_env, test_argv

    record = _read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("roles"), dict):
        return None
    base_path = clean_base_env().get("PATH", "")
    activations = {}
    for role, info in record["roles"].items():
        stored = _read_json(Path(info["activation"]))
        want = digest({"records_hash": info["records_hash"], "prefix": info["prefix"], "PATH": base_path})
        if not isinstance(stored, dict) or stored.get("key") != want:
            return None
        activations[role] = {"unset": list(stored.get("unset", [])), "delta": dict(stored["delta"])}
    plan = record["plan"]
    argv = {"test": test_argv(plan["command"], [])}
    if plan["import_check"] is not None:
        argv["import"] = test_argv(plan["import_check"]["command"], [])
    if set(argv) - set(activations):
        return None
    return {
        **record,
        "record_file": str(path),
        "record_entry": stat_entry(path),
        "lock": str(_cache_root(record) / "locks" / f"cell-{record['cell']}.lock"),
        "activations": activations,
        "argv": argv,
    }


def drop_index(invocation: Invocation) -> None:
    Path(snapshot_path(invocation.material())).unlink(missing_ok=True)


def load_cached(kind: str, material: Any) -> Any | None:
    """A value stored by :func:`store_cached` whose inputs are all unchanged, else ``None``."""
    from harness.frozen import digest

    stored = _read_json(Path(index_dir()) / f"{kind}-{digest(material, length=24)}.json")
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
            Path(index_dir()) / f"{kind}-{digest(material, length=24)}.json",
            {"format": FORMAT, "taken_ns": taken_ns, "inputs": entries, "value": value},
        )


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _cache_root(record: Mapping[str, Any]) -> Path:
    return Path(record["cache_root"])


# -- replaying ---------------------------------------------------------------------------------------


def plan_of(record: Mapping[str, Any], activations: Mapping[str, Any]) -> TestPlan | None:
    """The test plan a snapshot's record describes, with the environments a full run would give
    (``activations``: each prefix's activation, which the snapshot holds)."""
    from harness.execute import ImportCheck, TestPlan
    from harness.launch import clean_base_env

    roles = record["roles"]
    base = clean_base_env()

    def env_of(role: str) -> dict[str, str] | None:
        if role not in roles or role not in activations:
            return None
        return activated_env(activations[role], record["activation_env"], base)

    test_env = env_of("test")
    if test_env is None:
        return None
    plan = record["plan"]
    check = None
    if plan["import_check"] is not None:
        import_env = env_of("import")
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


def replay(
    cells: Sequence[Mapping[str, Any]],
    extra_args: Sequence[str],
    *,
    quiet: bool,
    launched: Launched | None = None,
) -> int | None:
    """Run the tests of a snapshot's cells (the first command already ``launched``), as a full run
    would once everything is cached: the same JUnit file, run report (``"warm": true``) and summary."""
    from harness.cache import Cache
    from harness.execute import execute
    from harness.report import CACHED, RunReport
    from harness.summary import exit_code, render_plain, summary_rows

    plans = [plan_of(cell, cell["activations"]) for cell in cells]
    if any(plan is None for plan in plans):
        return None  # cannot happen after the first command started, but never run half a snapshot
    listener = None if quiet else _Lines()
    report = RunReport(listener=listener)
    outcomes = {}
    for cell, plan in zip(cells, plans, strict=True):
        for marker in cell.get("used", []):  # `harness gc --older-than` sees the cell in use
            with contextlib.suppress(OSError):
                os.utime(marker)
        for stage, reason in cell["stages"]:
            report.record(cell["cell"], stage, CACHED, f"warm: {reason}" if reason else "warm")
        if not quiet:
            print(f"[harness] {cell['cell']} warm start: {len(cell['stages'])} stages cached, "
                  f"{len(cell['inputs']) + len(cell['outputs'])} paths unchanged",
                  file=sys.stderr, flush=True)
        outcomes[cell["cell"]] = execute(
            plan, report, extra_args=extra_args, extra_env=cell["extra_env"], launched=launched
        )
        launched = None  # only the first command was started early
    report.extra["tests"] = {cid: o.to_json() for cid, o in outcomes.items()}
    report.extra["skipped"] = {}
    report.extra["errors"] = {}
    report.extra["warm"] = True
    paths = []
    for root in dict.fromkeys(_cache_root(c) for c in cells):
        paths.append(report.write(Cache(root)))
    rows = summary_rows(report, outcomes, [c["cell"] for c in cells])
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
