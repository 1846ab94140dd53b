"""The end-of-run summary: one row per cell, and what failed, in words a user can act on.

The table answers "did my matrix pass, and did the harness redo work it did
not need to" (the stage counts make DESIGN invariant 2 visible); the lines
under it name every failing test or the reason a cell could not be tested, so
that nobody has to scroll back through interleaved logs to find them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from harness.frozen import FrozenDict
from harness.report import CACHED, DONE, FAILED, SKIPPED, RunReport, StageResult
from harness.run import TestOutcome

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

PASSED = "passed"
ERROR = "error"
RESULT_FAILED = "failed"
RESULT_SKIPPED = "skipped"

TEST_STAGE = "test"
_STYLES = {PASSED: "green", RESULT_FAILED: "bold red", ERROR: "bold red", RESULT_SKIPPED: "yellow"}
_MAX_NAMES = 25
_MAX_REASON_LINES = 12


@dataclass(frozen=True)
class SummaryRow:
    """One cell's line in the summary (``result``: passed | failed | skipped | error)."""

    cell: str
    result: str
    cached: int
    done: int
    failed_stages: int
    passed: int
    failed: int  # failed tests plus tests that errored
    skipped: int
    duration: float
    reason: str = ""
    failures: tuple[str, ...] = ()


def summary_rows(
    report: RunReport,
    outcomes: Mapping[str, TestOutcome],
    cells: Sequence[str],
    skipped: Mapping[str, str] = FrozenDict(),
) -> list[SummaryRow]:
    """One row per cell, in ``cells`` order.

    Stage counts come from the run report and leave out the ``test`` stage,
    whose result the test counts already give.  A cell that has no test
    outcome but a failed stage is an ``error`` with that stage's reason (the
    error's own message, which names what failed); one
    that was never tested for no recorded reason is an ``error`` too, so a
    cell can never pass by not running.
    """
    rows = []
    for cell in cells:
        stages = report.select(cell=cell)
        setup = [r for r in stages if r.kind != TEST_STAGE]
        tests = [r for r in stages if r.kind == TEST_STAGE]
        failed_setup = [r for r in setup if r.status == FAILED]
        outcome = outcomes.get(cell)
        duration = sum(r.duration for r in setup)
        duration += outcome.duration if outcome is not None else sum(r.duration for r in tests)
        counts = {
            "cached": sum(1 for r in setup if r.status == CACHED),
            "done": sum(1 for r in setup if r.status == DONE),
            "failed_stages": len(failed_setup),
        }
        if cell in skipped:
            rows.append(_row(cell, RESULT_SKIPPED, counts, duration, reason=skipped[cell]))
        elif outcome is not None:
            result = PASSED if outcome.ok and not failed_setup else RESULT_FAILED
            reason = outcome.reason or (_stage_reason(failed_setup[0]) if failed_setup else "")
            rows.append(
                SummaryRow(
                    cell=cell,
                    result=result,
                    **counts,
                    passed=outcome.passed,
                    failed=outcome.failed + outcome.errors,
                    skipped=outcome.skipped,
                    duration=duration,
                    reason=reason,
                    failures=outcome.failures,
                )
            )
        else:
            rows.append(_untested(cell, counts, duration, failed_setup, tests))
    return rows


def _untested(
    cell: str,
    counts: dict[str, int],
    duration: float,
    failed_setup: list[StageResult],
    tests: list[StageResult],
) -> SummaryRow:
    failed_tests = [r for r in tests if r.status == FAILED]
    if failed_setup or failed_tests:
        return _row(cell, ERROR, counts, duration, _stage_reason((failed_setup or failed_tests)[0]))
    skipped_tests = [r for r in tests if r.status == SKIPPED]
    if skipped_tests:
        return _row(cell, RESULT_SKIPPED, counts, duration, skipped_tests[0].reason)
    return _row(cell, ERROR, counts, duration, "the cell's tests did not run")


def _row(
    cell: str, result: str, counts: dict[str, int], duration: float, reason: str
) -> SummaryRow:
    return SummaryRow(
        cell=cell,
        result=result,
        **counts,
        passed=0,
        failed=0,
        skipped=0,
        duration=duration,
        reason=reason,
    )


def _stage_reason(result: StageResult) -> str:
    return result.reason or f"stage {result.stage} failed"


def _stages_text(row: SummaryRow) -> str:
    parts = [
        f"{n} {label}"
        for n, label in (
            (row.cached, "cached"),
            (row.done, "done"),
            (row.failed_stages, "failed"),
        )
        if n
    ]
    return ", ".join(parts) or "-"


def _tests_text(row: SummaryRow) -> str:
    if row.result in (ERROR, RESULT_SKIPPED) and not (row.passed or row.failed or row.skipped):
        return "-"
    parts = [
        f"{n} {label}"
        for n, label in ((row.passed, "passed"), (row.failed, "failed"), (row.skipped, "skipped"))
        if n
    ]
    return ", ".join(parts) or "no tests"


def format_duration(seconds: float) -> str:
    """``3.2s`` under a minute, ``4m 05s`` above: what a person reads at a glance."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def render_summary(rows: Sequence[SummaryRow], console: Console) -> None:
    """Print the table, then the failing tests or error reason of each cell that did not pass."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("cell", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("stages")
    table.add_column("tests")
    table.add_column("time", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            Text(row.cell),
            Text(row.result, style=_STYLES.get(row.result, "")),
            Text(_stages_text(row)),
            Text(_tests_text(row)),
            Text(format_duration(row.duration)),
        )
    console.print(table)
    for row in rows:
        if row.result in (RESULT_FAILED, ERROR):
            _print_failure(row, console)
    for row in rows:
        if row.result == RESULT_SKIPPED and row.reason:
            console.print(Text(f"{row.cell}: skipped: {_first_line(row.reason)}", style="yellow"))
    console.print(_totals(rows))


def _totals(rows: Sequence[SummaryRow]) -> Text:
    from rich.text import Text

    bad = any(r.result in (RESULT_FAILED, ERROR) for r in rows)
    return Text(_totals_text(rows), style="bold red" if bad else "green")


def _print_failure(row: SummaryRow, console: Console) -> None:
    from rich.text import Text

    console.print(Text(f"{row.cell}: {row.result}", style=_STYLES[row.result]))
    for name in row.failures[:_MAX_NAMES]:
        console.print(Text(f"  FAILED {name}"), soft_wrap=True)
    if len(row.failures) > _MAX_NAMES:
        console.print(Text(f"  ... and {len(row.failures) - _MAX_NAMES} more"))
    if row.reason:
        lines = row.reason.splitlines()
        for line in lines[:_MAX_REASON_LINES]:
            console.print(Text(f"  {line}"), soft_wrap=True)
        if len(lines) > _MAX_REASON_LINES:
            console.print(Text(f"  ... ({len(lines) - _MAX_REASON_LINES} more lines)"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def summary_lines(rows: Sequence[SummaryRow]) -> list[str]:
    """The summary as plain lines, laid out as :func:`render_summary` lays it out without a terminal.

    The warm start prints this: rich's import alone costs more than
    everything else a warm re-run does before its tests start.
    """
    header = ("cell", "result", "stages", "tests", "time")
    cells = [
        (r.cell, r.result, _stages_text(r), _tests_text(r), format_duration(r.duration)) for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str], sep: str) -> str:
        parts = [v.rjust(w) if i == 4 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return sep.join(parts).rstrip()

    out = [line(header, " ┃ "), "━╇━".join("━" * w for w in widths)]
    out += [line(c, " │ ") for c in cells]
    for row in rows:
        if row.result in (RESULT_FAILED, ERROR):
            out.append(f"{row.cell}: {row.result}")
            out += [f"  FAILED {name}" for name in row.failures[:_MAX_NAMES]]
            if len(row.failures) > _MAX_NAMES:
                out.append(f"  ... and {len(row.failures) - _MAX_NAMES} more")
            lines = row.reason.splitlines() if row.reason else []
            out += [f"  {text}" for text in lines[:_MAX_REASON_LINES]]
            if len(lines) > _MAX_REASON_LINES:
                out.append(f"  ... ({len(lines) - _MAX_REASON_LINES} more lines)")
    for row in rows:
        if row.result == RESULT_SKIPPED and row.reason:
            out.append(f"{row.cell}: skipped: {_first_line(row.reason)}")
    out.append(_totals_text(rows))
    return out


def render_plain(rows: Sequence[SummaryRow], stream: TextIO) -> None:
    stream.write("\n".join(summary_lines(rows)) + "\n")


def _totals_text(rows: Sequence[SummaryRow]) -> str:
    counts = {result: sum(1 for r in rows if r.result == result) for result in _STYLES}
    words = [f"{n} {result}" for result, n in counts.items() if n or result == PASSED]
    cells = f"{len(rows)} cell{'s' if len(rows) != 1 else ''}"
    return f"{cells}: " + ", ".join(words)


def exit_code(rows: Sequence[SummaryRow]) -> int:
    """0 when every cell passed or was skipped, else 1 (user errors exit 2 elsewhere)."""
    return 0 if all(row.result in (PASSED, RESULT_SKIPPED) for row in rows) else 1
