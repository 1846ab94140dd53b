"""CLI sub-commands over the environment stages: ``harness solve`` and ``harness plan``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli import COMMANDS, EXTRA_COMMANDS


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("solve", help="solve, lock and install the prefixes of cells")
    p.add_argument("cells", nargs="+", help="cell ids (globs such as 'py312-*' work)")
    p.add_argument("--from", dest="sources", action="append", default=[],
                   help="matrix file or manifest (repeatable; default: matrices/*.toml)")
    p.add_argument("--update", action="store_true", help="re-solve even when the inputs are unchanged")
    p = sub.add_parser("plan", help="what each stage of a cell would do (cached or to do) and why")
    p.add_argument("cells", nargs="+", help="cell ids")
    p.add_argument("--from", dest="sources", action="append", default=[],
                   help="matrix file or manifest (repeatable; default: matrices/*.toml)")


def cmd_solve(args: argparse.Namespace) -> int:
    import os

    from harness.cache import Cache
    from harness.loader import find_cells
    from harness.report import RunReport
    from harness.stages import prepare_many

    os.environ["HARNESS_USED_RATTLER"] = "1"
    cells = find_cells(args.cells, [Path(p) for p in args.sources] or None)
    report = RunReport()
    failed = 0
    by_cache: dict[Path, list] = {}
    for cell in cells:
        by_cache.setdefault(Cache.for_manifest(cell.manifest).root, []).append(cell)
    for group in by_cache.values():
        cache = Cache.for_manifest(group[0].manifest)
        outcome = prepare_many(group, cache=cache, update=args.update, report=report)
        for cid, error in outcome.failures.items():
            failed += 1
            print(f"error: cell {cid}: {error}", file=sys.stderr)
        path = report.write(cache)
        print(f"report: {path}", file=sys.stderr)
    for cell in cells:
        stages = report.select(cell=cell.id)
        line = ", ".join(f"{r.stage} {r.status}" for r in stages)
        print(f"{cell.id}: {line}")
    return 1 if failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.cache import Cache
    from harness.loader import find_cells
    from harness.stages import plan

    for cell in find_cells(args.cells, [Path(p) for p in args.sources] or None):
        print(f"cell {cell.id}")
        for step in plan(cell, Cache.for_manifest(cell.manifest)):
            print(f"  {step.stage:<16} {step.status:<8} {step.reason}")
    return 0


EXTRA_COMMANDS.append(_register)
COMMANDS["solve"] = cmd_solve
COMMANDS["plan"] = cmd_plan
