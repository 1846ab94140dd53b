"""``harness doctor``: what this machine is, and which cells can run on it.

Before a long matrix run, or when a CI job skipped half its cells, the first
question is "what does the harness think this runner has?".  The doctor
answers it from what the run itself would use (the same runner detection and
GPU gate as ``harness test``, the same interpreter lookup as the offline
channel) without solving, installing or building anything, so it is instant
and safe to run anywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cell import Cell
from harness.cli import COMMANDS, EXTRA_COMMANDS
from harness.errors import HarnessError
from harness.gpu import DEFAULT_POLICY, RUN, Runner, detect_runner, gate

if TYPE_CHECKING:
    from harness.channel.pythons import PythonInfo


@dataclass(frozen=True)
class CellCheck:
    """Whether one cell can run here; ``reasons`` say why not (empty when it can)."""

    cell: str
    reasons: tuple[str, ...]

    @property
    def runs(self) -> bool:
        return not self.reasons


class Pythons:
    """The interpreters the offline channel would bridge, probed once and only if a cell asks.

    Probing runs each candidate interpreter, so a matrix without offline cells
    never pays for it.
    """

    def __init__(self, discover: Callable[[], Sequence[PythonInfo]] | None = None) -> None:
        self._discover = discover
        self._found: tuple[PythonInfo, ...] | None = None

    def get(self) -> tuple[PythonInfo, ...]:
        if self._found is None:
            if self._discover is None:
                from harness.channel import discover_pythons

                self._found = tuple(discover_pythons())
            else:
                self._found = tuple(self._discover())
        return self._found

    @property
    def probed(self) -> bool:
        return self._found is not None


def check_cell(
    cell: Cell, runner: Runner, pythons: Pythons, policy: str = DEFAULT_POLICY
) -> CellCheck:
    """Every reason ``cell`` would not run here: platform, GPU driver, interpreter."""
    from harness.pipeline import OFFLINE, python_spec
    from harness.stages import runs_here

    reasons: list[str] = []
    if not runs_here(cell.platform):
        reasons.append(f"{cell.platform} cells cannot run on this {runner.platform} machine")
    try:
        decision = gate(cell, runner, policy)
    except HarnessError as exc:  # a CUDA declaration that is not a version
        reasons.append(exc.message)
    else:
        if decision.action != RUN:
            reasons.append(decision.reason)
    spec = python_spec(cell)
    on_offline = OFFLINE in (c.strip() for c in cell.channels)
    if spec is not None and on_offline and runs_here(cell.platform):
        from harness.channel import find_python

        try:
            reason = find_python(pythons.get(), spec).reason
        except HarnessError as exc:
            reason = exc.message
        if reason is not None:
            reasons.append(reason)
    return CellCheck(cell.id, tuple(reasons))


def render_runner(runner: Runner) -> list[str]:
    gpus = list(runner.gpus) or ["no GPU"]
    lines = [
        "runner",
        f"  {'platform':<18}{runner.platform}",
        f"  {'virtual packages':<18}{' '.join(runner.virtual_packages)}",
        f"  {'CUDA driver':<18}{runner.describe_cuda()}",
        f"  {'GPUs':<18}{gpus[0]}",
    ]
    lines += [f"  {'':<18}{g}" for g in gpus[1:]]
    return lines


def render_checks(checks: Sequence[CellCheck]) -> list[str]:
    runnable = sum(1 for c in checks if c.runs)
    width = max((len(c.cell) for c in checks), default=0)
    lines = [f"cells: {runnable} can run here, {len(checks) - runnable} cannot"]
    for check in checks:
        if check.runs:
            lines.append(f"  {check.cell:<{width}}  runs")
        else:
            lines.append(f"  {check.cell:<{width}}  cannot run: {'; '.join(check.reasons)}")
    return lines


def _hints(checks: Sequence[CellCheck]) -> list[str]:
    gpu = any("driver, this runner has" in r for c in checks for r in c.reasons)
    if not gpu:
        return []
    return [
        "hint: cells that need a CUDA driver are skipped by `harness test` (--gpu skip); "
        "--gpu ignore runs them anyway, and CONDA_OVERRIDE_CUDA=<version> makes the harness "
        "treat this runner as having that driver"
    ]


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.loader import compile_sources

    runner = detect_runner()
    out = render_runner(runner)
    paths = [Path(p) for p in args.sources]
    try:
        compiled = compile_sources(paths or None)
    except HarnessError as exc:
        if paths:
            raise
        print("\n".join([*out, "", f"no cells: {exc.message}"]))
        return 0
    for warning in compiled.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    pythons = Pythons()
    checks = [check_cell(cell, runner, pythons) for cell in compiled.cells]
    if pythons.probed:
        found = ", ".join(p.version for p in pythons.get()) or "none"
        out.append(f"  {'pythons':<18}{found} (for cells on the offline channel)")
    out += ["", *render_checks(checks), *_hints(checks)]
    print("\n".join(out))
    return 0


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor",
        help="this runner's platform, virtual packages and GPUs, and which cells can run here",
        description="Reads only: nothing is solved, installed or built.",
    )
    p.add_argument(
        "sources", nargs="*", metavar="MATRIX_OR_MANIFEST",
        help="matrix files or manifests (default: matrices/*.toml)",
    )


EXTRA_COMMANDS.append(_register)
COMMANDS["doctor"] = cmd_doctor
