"""The end-of-run summary (rows, rendering, exit code) and the plain progress lines."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from harness.progress import ConsoleProgress
from harness.report import RunReport
from harness.run import TestOutcome
from harness.summary import SummaryRow, exit_code, render_summary, summary_rows


def outcome(
    cell: str,
    *,
    passed: int = 0,
    failed: int = 0,
    errors: int = 0,
    skipped: int = 0,
    failures: tuple[str, ...] = (),
    returncode: int = 0,
    reason: str = "",
    duration: float = 2.0,
) -> TestOutcome:
    return TestOutcome(
        cell=cell,
        command=("pytest",),
        returncode=returncode,
        passed=passed,
        failed=failed,
        errors=errors,
        skipped=skipped,
        failures=failures,
        junit=Path("junit.xml"),
        log=None,
        duration=duration,
        reason=reason,
    )


def make_report() -> RunReport:
    report = RunReport()
    for cell in ("py312-cu13", "py313-cu13", "py311-cu12"):
        report.record(cell, "solve:build", "cached", duration=0.5)
        report.record(cell, "solve:test", "cached", duration=0.5)
        report.record(cell, "install:test", "done", duration=1.0)
    report.record("py312-cu13", "build", "done", duration=3.0)
    report.record("py312-cu13", "test", "done", duration=2.0)
    report.record("py313-cu13", "build", "done", duration=3.0)
    report.record("py313-cu13", "test", "done", duration=2.0)
    report.record("py311-cu12", "build", "failed", "nvcc: command not found", duration=1.0)
    return report


OUTCOMES = {
    "py312-cu13": outcome("py312-cu13", passed=12, skipped=2),
    "py313-cu13": outcome(
        "py313-cu13",
        passed=11,
        failed=1,
        skipped=2,
        failures=("tests/test_kernels.py::test_fft[complex64]",),
        returncode=1,
    ),
}
CELLS = ["py312-cu13", "py313-cu13", "py311-cu12", "py310-cu13"]
SKIPPED = {"py310-cu13": "needs a CUDA 13 driver; this runner has none"}


def rows() -> list[SummaryRow]:
    return summary_rows(make_report(), OUTCOMES, CELLS, SKIPPED)


def test_rows_count_stages_without_the_test_stage() -> None:
    by_cell = {row.cell: row for row in rows()}
    assert [row.cell for row in rows()] == CELLS
    ok = by_cell["py312-cu13"]
    assert (ok.result, ok.cached, ok.done, ok.failed_stages) == ("passed", 2, 2, 0)
    assert (ok.passed, ok.failed, ok.skipped) == (12, 0, 2)
    assert ok.duration == 0.5 + 0.5 + 1.0 + 3.0 + 2.0
    bad = by_cell["py313-cu13"]
    assert bad.result == "failed"
    assert bad.failures == ("tests/test_kernels.py::test_fft[complex64]",)
    broken = by_cell["py311-cu12"]
    assert (broken.result, broken.failed_stages) == ("error", 1)
    assert broken.reason == "nvcc: command not found"
    skipped = by_cell["py310-cu13"]
    assert (skipped.result, skipped.reason) == ("skipped", SKIPPED["py310-cu13"])


def test_errors_count_as_failed_tests() -> None:
    report = RunReport()
    row = summary_rows(report, {"c": outcome("c", passed=1, errors=1, returncode=1)}, ["c"])[0]
    assert (row.result, row.failed) == ("failed", 1)


def test_a_cell_that_never_ran_is_an_error() -> None:
    row = summary_rows(RunReport(), {}, ["py312-cu13"])[0]
    assert row.result == "error"
    assert exit_code([row]) == 1


def test_a_failed_test_stage_without_outcome_is_an_error() -> None:
    report = RunReport()
    report.record("c", "test", "failed", "cannot run the tests of cell c: pytest not found")
    row = summary_rows(report, {}, ["c"])[0]
    assert row.result == "error"
    assert "pytest not found" in row.reason


def test_rendered_summary_names_failures_and_reasons() -> None:
    buffer = io.StringIO()
    render_summary(rows(), Console(file=buffer, force_terminal=False, width=120))
    text = buffer.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    ok_line = next(line for line in lines if line.startswith("py312-cu13"))
    assert "passed" in ok_line
    assert "2 cached, 2 done" in ok_line
    assert "12 passed, 2 skipped" in ok_line
    assert "7.0s" in ok_line
    assert "11 passed, 1 failed, 2 skipped" in text
    assert "tests/test_kernels.py::test_fft[complex64]" in text
    assert "nvcc: command not found" in text
    assert "needs a CUDA 13 driver" in text


def test_exit_code() -> None:
    all_rows = rows()
    assert exit_code(all_rows) == 1
    good = [r for r in all_rows if r.result in ("passed", "skipped")]
    assert len(good) == 2
    assert exit_code(good) == 0
    assert exit_code([r for r in all_rows if r.result == "error"]) == 1


def test_progress_plain_lines() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress(stream=stream, interactive=False)
    progress.start("py312-cu13", "build")
    progress.end("py312-cu13", "build", "done", "", 3.24)
    progress.start("py312-cu13", "activate")
    progress.end("py312-cu13", "activate", "cached", "", 0.0)
    progress.start("py312-cu13", "solve:test")
    progress.end("py312-cu13", "solve:test", "failed", "no solution\nconflict tree...", 1.0)
    assert stream.getvalue().splitlines() == [
        "[harness] py312-cu13 build ...",
        "[harness] py312-cu13 build done (3.2s)",
        "[harness] py312-cu13 activate cached (0.0s)",
        "[harness] py312-cu13 solve:test ...",
        "[harness] py312-cu13 solve:test failed (1.0s): no solution",
    ]


def test_progress_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress(stream=stream, quiet=True, interactive=False)
    progress.start("c", "build")
    progress.end("c", "build", "done", "", 1.0)
    assert stream.getvalue() == ""


def test_progress_spinner_mode_prints_finished_stages() -> None:
    stream = io.StringIO()
    with ConsoleProgress(stream=stream, interactive=True) as progress:
        progress.start("py312-cu13", "build")
        progress.end("py312-cu13", "build", "done", "", 3.2)
    assert "py312-cu13 build done (3.2s)" in stream.getvalue()
