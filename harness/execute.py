"""Run a prepared cell's tests: the release import check, then the test command.

A :class:`TestPlan` is everything the test stage needs, and nothing that
needs a solver: the full run (:mod:`harness.pipeline`) builds it from a
prepared cell, and the warm start (:mod:`harness.warm`) rebuilds it from its
record.  Both then call :func:`execute`, so a warm re-run does exactly what a
full run would do once everything is cached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.launch import Launched
from harness.report import RunReport
from harness.run import TestOutcome, run_tests


@dataclass(frozen=True)
class ImportCheck:
    """A release package's import check: the command and its clean prefix's environment."""

    command: str
    env: Mapping[str, str]
    package: str


@dataclass(frozen=True)
class TestPlan:
    """How to run one cell's tests."""

    __test__ = False

    cell: str
    command: str
    cwd: Path
    env: Mapping[str, str]
    junit: Path
    logs: Path
    import_check: ImportCheck | None = None
    pycache: Path | None = None  # where bytecode goes (never beside the sources)


def execute(
    plan: TestPlan,
    report: RunReport,
    *,
    extra_args: Sequence[str] = (),
    echo: bool = True,
    extra_env: Mapping[str, str] | None = None,
    launched: Launched | None = None,
) -> TestOutcome:
    """Run the import check (release builds) and the test command; record the ``test`` stage.

    ``extra_env`` is laid over both environments: what this runner adds (the
    GPU variables) is decided per run, not stored with the prefix.  ``launched``
    is the first of the two commands, already started (the warm start does so).
    """
    extra = dict(extra_env or {})
    with report.stage(plan.cell, "test") as stage:
        check = plan.import_check
        if check is not None:
            outcome = run_tests(
                plan.cell, check.command, env={**check.env, **extra}, cwd=plan.cwd,
                junit_path=plan.junit, log_path=plan.logs / "import-check.log", echo=echo,
                pycache=plan.pycache, launched=launched,
            )
            launched = None
            if not outcome.ok:
                reason = (
                    f"the release package {check.package} does not import in a prefix that holds "
                    f"only it and its depends (`{check.command}` failed{last_error(outcome.log)}): a "
                    "run-dependency is probably missing from [package.run-dependencies]"
                )
                outcome = dataclasses.replace(outcome, reason=reason)
                stage.failed(reason)
                return outcome
        outcome = run_tests(
            plan.cell, plan.command, env={**plan.env, **extra}, cwd=plan.cwd, extra_args=extra_args,
            junit_path=plan.junit, log_path=plan.logs / "test.log", echo=echo, pycache=plan.pycache,
            launched=launched,
        )
        counts = (
            f"{outcome.passed} passed, {outcome.failed + outcome.errors} failed, "
            f"{outcome.skipped} skipped"
        )
        if outcome.ok:
            stage.done(counts)
        else:
            stage.failed(outcome.reason or counts)
    return outcome


def last_error(log: Path | None) -> str:
    """``: ModuleNotFoundError: ...``, the exception line of a failed import check's log."""
    if log is None:
        return ""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "Error" in line and ":" in line:
            return ": " + line.strip()
    return ""
