"""``harness premerge``: before merging, run every cell this machine can run, in parallel.

A matrix is usually larger than one machine can serve: a laptop has two
CPython versions and no GPU.  The pre-merge check therefore first *selects*:
a cell whose platform is not this machine's, whose GPU need the runner cannot
meet (the GPU gate of :mod:`harness.gpu`), or whose python pin no local
interpreter matches (:func:`harness.pipeline.skip_reason`) is listed as
skipped with its reason instead of being attempted.  The rest run fastest
profile first (``dev`` before ``release``: editable builds finish sooner and
fail the same way), so a broken change shows up early.

Each cell runs as its own ``python -m harness test --from <source> <id> -q``
process, at most ``-j`` at a time: solving, installing and building with
rattler in one process per cell keeps one cell's library state away from the
next, and the harness's file locks make cells that share a cache safe.  Each
process's output goes to ``<cache>/logs/<cell>/premerge.log``; its outcome is
read back from the JSON run report it names on stderr, and everything ends in
one summary table.  The exit code is 1 when any cell failed or errored.
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cell import Cell
from harness.cli import COMMANDS, EXTRA_COMMANDS
from harness.errors import HarnessError
from harness.frozen import FrozenDict

if TYPE_CHECKING:
    from harness.run import TestOutcome
    from harness.summary import SummaryRow

GPU_POLICIES = ("skip", "require", "ignore")
RUN = "run"
SKIP = "skip"
FAIL = "fail"
DEFAULT_JOBS = 2
_PROFILE_RANK = {"dev": 0, "release": 1}
_TAIL_LINES = 15
_REPORT_PREFIX = "report: "

# (action, reason): action is "run", "skip" or "fail".
Verdict = tuple[str, str]


@dataclass(frozen=True)
class Selection:
    """What the pre-merge check does with each cell: run it, skip it, or fail it unrun."""

    run: tuple[Cell, ...]
    skipped: FrozenDict[str, str]  # cell id -> why it cannot run here
    refused: FrozenDict[str, str]  # cell id -> why it fails without running (``--gpu require``)


@dataclass(frozen=True)
class CellRun:
    """One ``harness test`` process: its exit code, its output and the run reports it wrote."""

    cell: str
    returncode: int
    log: Path
    reports: tuple[Path, ...]
    tail: str
    duration: float


# --- selection and order (pure) ------------------------------------------------------------


def profile_rank(cell: Cell) -> int:
    """``dev`` profiles (and those inheriting it) first, then ``release``, then anything else."""
    return _PROFILE_RANK.get(cell.profile_base, len(_PROFILE_RANK))


def order_cells(cells: Iterable[Cell]) -> list[Cell]:
    """Fastest profile first; within a profile, the matrix's own order (the sort is stable)."""
    return sorted(cells, key=profile_rank)


def filter_cells(cells: Iterable[Cell], patterns: Sequence[str]) -> list[Cell]:
    """The cells whose id matches one of ``patterns`` (globs); all of them without patterns."""
    cells = list(cells)
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.id, pattern) for c in cells):
            from harness.errors import CellError
            from harness.manifest.read import did_you_mean

            raise CellError(f"no cell '{pattern}'", key="--cell",
                            hint=did_you_mean(pattern, [c.id for c in cells])
                            or "list the cells with `harness list`")
    return chosen


def select_cells(
    cells: Iterable[Cell],
    *,
    gate: Callable[[Cell], Verdict],
    skip_reason: Callable[[Cell], str | None],
) -> Selection:
    """Split ``cells`` into those to run (in run order), to skip and to refuse.

    The GPU gate is asked first because it costs nothing; ``skip_reason``
    (platform, interpreters) only for cells the gate lets through.  A
    :class:`HarnessError` from ``skip_reason`` refuses that cell alone.
    """
    run: list[Cell] = []
    skipped: dict[str, str] = {}
    refused: dict[str, str] = {}
    for cell in cells:
        action, reason = gate(cell)
        if action == SKIP:
            skipped[cell.id] = reason
            continue
        if action == FAIL:
            refused[cell.id] = reason
            continue
        try:
            why = skip_reason(cell)
        except HarnessError as exc:
            refused[cell.id] = str(exc)
            continue
        if why is not None:
            skipped[cell.id] = why
        else:
            run.append(cell)
    return Selection(tuple(order_cells(run)), FrozenDict(skipped), FrozenDict(refused))


# --- this machine: the GPU gate and the interpreter check --------------------------------


def gpu_gate(policy: str) -> Callable[[Cell], Verdict]:
    """The runner's GPU gate for ``policy``, from :mod:`harness.gpu` when it is available.

    Without that module the runner's driver cannot be examined: cells that
    need a GPU are then skipped (``require``: refused) unless the policy is
    ``ignore``; every other cell runs.
    """
    try:
        from harness import gpu
    except ImportError:
        gpu = None
    if gpu is not None and hasattr(gpu, "gate") and hasattr(gpu, "detect_runner"):
        runner = gpu.detect_runner()

        def gate(cell: Cell) -> Verdict:
            verdict = gpu.gate(cell, runner, policy)
            return str(verdict.action), str(verdict.reason)

        return gate

    def fallback(cell: Cell) -> Verdict:
        if policy == "ignore" or cell.gpu != "required" or not cell.cuda:
            return RUN, ""
        reason = f"needs a CUDA {cell.cuda} driver, and this runner's GPU cannot be examined"
        return (FAIL if policy == "require" else SKIP), reason

    return fallback


def local_skip_reason() -> Callable[[Cell], str | None]:
    """Why a cell cannot run on this machine: another platform, or no interpreter for its pin.

    The interpreter check builds (or confirms current) the offline channel of
    the cell's cache once, here, before any worker starts, so the workers
    find it ready instead of racing to build it.
    """
    from harness.cache import Cache
    from harness.pipeline import skip_reason
    from harness.stages import runs_here

    def reason(cell: Cell) -> str | None:
        if not runs_here(cell.platform):
            return f"{cell.platform} cannot run on this machine"
        return skip_reason(cell, Cache.for_manifest(cell.manifest))

    return reason


def accepts_gpu_policy() -> bool:
    """Whether ``harness test`` takes ``--gpu`` (it does when ``run_cells`` takes ``gpu_policy``)."""
    from harness.pipeline import run_cells

    return "gpu_policy" in inspect.signature(run_cells).parameters


# --- running one cell --------------------------------------------------------------------------


def cell_argv(
    cell: Cell,
    *,
    python: str = sys.executable,
    gpu_policy: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command that tests one cell in its own process."""
    source = cell.matrix or cell.manifest
    argv = [python, "-m", "harness", "test", "--from", str(source), cell.id, "-q"]
    if gpu_policy is not None:
        argv += ["--gpu", gpu_policy]
    if extra_args:
        argv += ["--", *extra_args]
    return argv


def log_path(cell: Cell) -> Path:
    from harness.cache import Cache

    return Cache.for_manifest(cell.manifest).root / "logs" / cell.id / "premerge.log"


def report_paths(output: str) -> tuple[Path, ...]:
    """The run reports a ``harness test`` process named (``report: <path>`` lines)."""
    return tuple(
        Path(line[len(_REPORT_PREFIX):].strip())
        for line in output.splitlines()
        if line.startswith(_REPORT_PREFIX)
    )


def run_one(cell: Cell, argv: Sequence[str]) -> CellRun:
    """Run ``argv`` (one cell's ``harness test``), its output teed into the cell's log."""
    log = log_path(cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace", check=False,
    )
    duration = time.perf_counter() - start
    log.write_text(proc.stdout, encoding="utf-8")
    tail = "\n".join(proc.stdout.rstrip().splitlines()[-_TAIL_LINES:])
    return CellRun(cell.id, proc.returncode, log, report_paths(proc.stdout), tail, duration)


# --- reading the outcome back --------------------------------------------------------------


def _outcome(data: Mapping[str, Any]) -> TestOutcome:
    from harness.run import TestOutcome

    return TestOutcome(
        cell=str(data["cell"]),
        command=tuple(data.get("command") or ()),
        returncode=int(data.get("returncode", 0)),
        passed=int(data.get("passed", 0)),
        failed=int(data.get("failed", 0)),
        errors=int(data.get("errors", 0)),
        skipped=int(data.get("skipped", 0)),
        failures=tuple(data.get("failures") or ()),
        junit=Path(data["junit"]) if data.get("junit") else None,
        log=Path(data["log"]) if data.get("log") else None,
        duration=float(data.get("duration", 0.0)),
        reason=str(data.get("reason") or ""),
    )


def row_for(run: CellRun) -> SummaryRow:
    """The summary row of one cell from the run reports its process wrote.

    A process that wrote no report (it stopped before running anything), or
    that exited non-zero while its report says the cell passed, makes an
    ``error`` row with the end of its output: a cell never passes by accident.
    """
    from harness.report import RunReport
    from harness.summary import ERROR, PASSED, SummaryRow, summary_rows

    report = RunReport()
    outcomes: dict[str, TestOutcome] = {}
    skipped: dict[str, str] = {}
    found = False
    for path in run.reports:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found = True
        for stage in data.get("stages", ()):
            if stage.get("cell") == run.cell:
                report.record(stage["cell"], stage["stage"], stage["status"],
                              stage.get("reason", ""), float(stage.get("duration", 0.0)))
        if run.cell in data.get("tests", {}):
            outcomes[run.cell] = _outcome(data["tests"][run.cell])
        if run.cell in data.get("skipped", {}):
            skipped[run.cell] = str(data["skipped"][run.cell])
    if found:
        (row,) = summary_rows(report, outcomes, [run.cell], skipped=skipped)
        if run.returncode == 0 or row.result != PASSED:
            return row
    reason = f"`harness test` exited with {run.returncode}"
    if run.returncode == 0:
        reason += " but wrote no run report"
    if run.tail:
        reason += ":\n" + run.tail
    reason += f"\n(full output: {run.log})"
    return SummaryRow(cell=run.cell, result=ERROR, cached=0, done=0, failed_stages=0, passed=0,
                      failed=0, skipped=0, duration=run.duration, reason=reason)


def selection_rows(selection: Selection) -> list[SummaryRow]:
    """Rows for the cells that did not run: refused ones as errors, skipped ones with their reason."""
    from harness.summary import ERROR, RESULT_SKIPPED, SummaryRow

    def row(cell: str, result: str, reason: str) -> SummaryRow:
        return SummaryRow(cell=cell, result=result, cached=0, done=0, failed_stages=0, passed=0,
                          failed=0, skipped=0, duration=0.0, reason=reason)

    return [row(c, ERROR, r) for c, r in selection.refused.items()] + [
        row(c, RESULT_SKIPPED, r) for c, r in selection.skipped.items()
    ]


# --- the command -----------------------------------------------------------------------------


def run_selection(
    selection: Selection,
    *,
    jobs: int,
    argv_for: Callable[[Cell], list[str]],
    progress: Callable[[str], None],
) -> list[CellRun]:
    """Run the selected cells, ``jobs`` processes at a time; results in run order."""
    if not selection.run:
        return []
    results: dict[str, CellRun] = {}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="premerge")
    try:
        futures = {}
        for cell in selection.run:
            futures[pool.submit(run_one, cell, argv_for(cell))] = cell
        for future in as_completed(futures):
            run = future.result()
            results[run.cell] = run
            word = "ok" if run.returncode == 0 else f"exit {run.returncode}"
            progress(f"{run.cell}: {word} ({run.duration:.1f}s, log {run.log})")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[c.id] for c in selection.run if c.id in results]


def _progress(message: str) -> None:
    print(f"[premerge] {message}", file=sys.stderr, flush=True)


def cmd_premerge(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.loader import compile_sources
    from harness.summary import exit_code, render_summary

    if args.jobs < 1:
        raise HarnessError(f"-j must be at least 1, not {args.jobs}", key="-j", hint="e.g. -j 2")
    compiled = compile_sources([Path(p) for p in args.sources] or None)
    cells = filter_cells(compiled.cells, args.cell)
    selection = select_cells(cells, gate=gpu_gate(args.gpu), skip_reason=local_skip_reason())
    _progress(
        f"{len(selection.run)} of {len(cells)} cells run here, {args.jobs} at a time"
        + (f"; {len(selection.skipped)} skipped" if selection.skipped else "")
        + (f"; {len(selection.refused)} refused" if selection.refused else "")
    )
    policy = args.gpu if accepts_gpu_policy() else None
    runs = run_selection(
        selection,
        jobs=args.jobs,
        argv_for=lambda cell: cell_argv(cell, gpu_policy=policy, extra_args=args.extra),
        progress=_progress,
    )
    rows = [row_for(run) for run in runs] + selection_rows(selection)
    console = Console(file=sys.stdout)
    console.print()
    render_summary(rows, console)
    return exit_code(rows)


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "premerge",
        help="run every cell this machine can run, in parallel, and print one summary",
        description="The local pre-merge check: the cells whose platform, GPU need and python "
        "pin this machine can serve, dev profiles first, each in its own `harness test` process. "
        "The others are listed as skipped with the reason. Arguments after `--` go to each "
        "cell's test command.",
    )
    p.add_argument("sources", nargs="*", help="matrix files or manifests (default: matrices/*.toml)")
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help="cells tested at the same time, one process each (default: %(default)s)")
    p.add_argument("--gpu", choices=GPU_POLICIES, default="skip",
                   help="cells whose GPU need this runner cannot meet: skip them (default), "
                   "fail them (require), or run them anyway (ignore)")
    p.add_argument("-c", "--cell", action="append", default=[], metavar="GLOB",
                   help="only the cells whose id matches (repeatable; e.g. 'py312-*')")


EXTRA_COMMANDS.append(_register)
COMMANDS["premerge"] = cmd_premerge
