"""CLI sub-commands over the stages: ``solve``, ``plan``, ``build``, ``test`` (and ``channel offline``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness import inputs
from harness.cli import COMMANDS, EXTRA_COMMANDS

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.pipeline import RunResult


def _cells_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cells", nargs="+", help="cell ids (globs such as 'py312-*' work)")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="SOURCE",
                   help="matrix file or manifest (repeatable; default: matrices/*.toml)")


def _gpu_arg(p: argparse.ArgumentParser) -> None:
    from harness.gpu import DEFAULT_POLICY, POLICIES

    p.add_argument(
        "--gpu", choices=POLICIES, default=DEFAULT_POLICY,
        help="cells that need a CUDA driver this runner lacks: skip them (default), "
        "fail them (require, for GPU runners) or run them anyway (ignore)",
    )


def _repair_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repair", action="store_true",
        help="check every installed file of the cells' prefixes (existence, size) and "
        "reinstall the packages whose files are missing or damaged",
    )


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("solve", help="solve, lock and install the prefixes of cells (no build)")
    _cells_args(p)
    p.add_argument("--update", action="store_true", help="re-solve even when the inputs are unchanged")
    _repair_arg(p)
    p = sub.add_parser("plan", help="what each stage of a cell would do (cached or to do) and why")
    _cells_args(p)
    p = sub.add_parser(
        "build", help="solve, install and build the package of cells",
        description="Builds are never GPU-gated: a cell's solves (rattler-build's too) use "
        "its declared virtual packages, so a CUDA package builds on a runner without a GPU.",
    )
    _cells_args(p)
    p.add_argument("--update", action="store_true", help="re-solve even when the inputs are unchanged")
    _repair_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p = sub.add_parser(
        "test",
        help="solve, install, build, install the build and run the test command of cells",
        description="Arguments after `--` go to each cell's test command "
        "(e.g. `harness test py312-cu13 -- -k dot`).",
    )
    _cells_args(p)
    p.add_argument("--update", action="store_true", help="re-solve even when the inputs are unchanged")
    _repair_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _gpu_arg(p)
    sub.add_parser("channel", help="`harness channel offline`: build the offline conda channel "
                   "(see `harness channel offline --help`)")


def _find(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from harness.loader import find_cells

    return find_cells(args.cells, [Path(p) for p in args.sources] or None)


def _print_stages(result, cells) -> None:  # type: ignore[no-untyped-def]
    for cell in cells:
        stages = result.report.select(cell=cell.id)
        line = ", ".join(f"{r.stage} {r.status}" for r in stages)
        print(f"{cell.id}: {line}")


def cmd_solve(args: argparse.Namespace) -> int:
    from harness.pipeline import run_cells

    cells = _find(args)
    result = run_cells(cells, test=False, update=args.update, build=False, repair=args.repair)
    return _finish_prepare(result, cells)


def cmd_build(args: argparse.Namespace) -> int:
    from harness.pipeline import run_cells
    from harness.progress import ConsoleProgress

    cells = _find(args)
    result = run_cells(
        cells, test=False, update=args.update, listener=ConsoleProgress(quiet=args.quiet),
        repair=args.repair,
    )
    return _finish_prepare(result, cells)


def _finish_prepare(result, cells) -> int:  # type: ignore[no-untyped-def]
    for cid, error in result.errors.items():
        print(f"error: cell {cid}: {error}", file=sys.stderr)
    for cid, reason in result.skipped.items():
        print(f"skipped: cell {cid}: {reason}", file=sys.stderr)
    for path in result.report_paths:
        print(f"report: {path}", file=sys.stderr)
    _print_stages(result, cells)
    return 1 if result.errors else 0


def cmd_test(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.pipeline import run_cells
    from harness.progress import ConsoleProgress
    from harness.summary import exit_code, render_summary, summary_rows

    started = time.time_ns()
    inputs.forget()  # what this compile reads is what the warm start checks next time
    cells = _find(args)
    result = run_cells(
        cells, extra_args=args.extra, update=args.update, listener=ConsoleProgress(quiet=args.quiet),
        gpu_policy=args.gpu, repair=args.repair,
    )
    rows = summary_rows(
        result.report, result.outcomes, [c.id for c in cells], skipped=result.skipped
    )
    console = Console(file=sys.stdout)
    console.print()
    render_summary(rows, console)
    for path in result.report_paths:
        print(f"report: {path}", file=sys.stderr)
    _index_warm_start(args, cells, result, started)
    return exit_code(rows)


def _index_warm_start(
    args: argparse.Namespace, cells: list[Cell], result: RunResult, started: int
) -> None:
    """Let the same command line start warm next time, when every cell it names left a record."""
    from harness import warm
    from harness.cache import Cache

    invocation = warm.Invocation(tuple(args.sources), tuple(args.cells), args.gpu)
    if args.update or {c.id for c in cells} != set(result.warm_records):
        warm.drop_index(invocation)
        return
    warm.write_index(
        invocation, [warm.record_path(Cache.for_manifest(c.manifest), c.id) for c in cells], started
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.cache import Cache
    from harness.pipeline import register_offline, uses_offline_channel
    from harness.stages import plan

    for cell in _find(args):
        cache = Cache.for_manifest(cell.manifest)
        if uses_offline_channel([cell]):
            register_offline(cache)
        print(f"cell {cell.id}")
        for step in plan(cell, cache):
            print(f"  {step.stage:<16} {step.status:<8} {step.reason}")
    return 0


def cmd_channel(args: argparse.Namespace) -> int:
    print("usage: harness channel offline [--help]", file=sys.stderr)
    return 2


EXTRA_COMMANDS.append(_register)
COMMANDS["channel"] = cmd_channel
COMMANDS["solve"] = cmd_solve
COMMANDS["plan"] = cmd_plan
COMMANDS["build"] = cmd_build
COMMANDS["test"] = cmd_test
