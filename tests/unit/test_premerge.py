"""``harness premerge``: which cells run here, in which order, and how their outcomes come back."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cell import Cell
from harness.errors import CellError, HarnessError
from harness.loader import compile_path
from harness.premerge import (
    FAIL,
    RUN,
    SKIP,
    CellRun,
    Verdict,
    cell_argv,
    filter_cells,
    gpu_gate,
    order_cells,
    report_paths,
    row_for,
    select_cells,
    selection_rows,
)
from harness.summary import ERROR, PASSED, RESULT_FAILED, RESULT_SKIPPED

REPO = Path(__file__).resolve().parents[2]
PYENV = Path.home() / ".pyenv" / "versions"


@pytest.fixture(scope="module")
def demo() -> list[Cell]:
    return list(compile_path(REPO / "matrices" / "demo.toml").cells)


@pytest.fixture(scope="module")
def cupy() -> list[Cell]:
    return list(compile_path(REPO / "matrices" / "cupy.toml").cells)


# --- selection and order -------------------------------------------------------------------


def test_dev_cells_run_before_release_cells_in_matrix_order(demo: list[Cell]) -> None:
    shuffled = demo[:]
    random.Random(4).shuffle(shuffled)
    ordered = order_cells(shuffled)
    profiles = [c.profile for c in ordered]
    assert profiles == ["dev"] * 8 + ["release"] * 8
    dev_in = [c.id for c in shuffled if c.profile == "dev"]
    assert [c.id for c in ordered[:8]] == dev_in  # stable: no other reordering
    custom = dataclasses.replace(demo[0], id="custom", profile="asan", profile_base="dev")
    other = dataclasses.replace(demo[0], id="odd", profile="odd", profile_base="odd")
    assert [c.id for c in order_cells([other, demo[1], custom])] == ["custom", demo[1].id, "odd"]


def test_select_asks_the_gpu_gate_first_and_orders_what_runs(demo: list[Cell]) -> None:
    verdicts: dict[str, Verdict] = {
        "py310-cu12": (SKIP, "needs a CUDA 12 driver"),
        "py310-cu13": (FAIL, "needs a CUDA 13 driver (require)"),
    }
    asked: list[str] = []

    def skip_reason(cell: Cell) -> str | None:
        asked.append(cell.id)
        if cell.id.startswith("py311"):
            return "no python matches 3.11.*"
        if cell.id == "py313-cu13":
            raise HarnessError("the offline channel cannot be built", hint="look at the log")
        return None

    selection = select_cells(demo, gate=lambda c: verdicts.get(c.id, (RUN, "")), skip_reason=skip_reason)
    assert "py310-cu12" not in asked and "py310-cu13" not in asked
    assert dict(selection.skipped) == {
        "py310-cu12": "needs a CUDA 12 driver",
        "py311-cu12": "no python matches 3.11.*",
        "py311-cu12-release": "no python matches 3.11.*",
        "py311-cu13": "no python matches 3.11.*",
        "py311-cu13-release": "no python matches 3.11.*",
    }
    assert set(selection.refused) == {"py310-cu13", "py313-cu13"}
    assert "offline channel cannot be built" in selection.refused["py313-cu13"]
    assert [c.id for c in selection.run] == [
        "py312-cu12", "py312-cu13", "py313-cu12",
        "py310-cu12-release", "py310-cu13-release", "py312-cu12-release",
        "py312-cu13-release", "py313-cu12-release", "py313-cu13-release",
    ]
    rows = selection_rows(selection)
    assert {r.cell: r.result for r in rows} == {
        **{c: ERROR for c in selection.refused},
        **{c: RESULT_SKIPPED for c in selection.skipped},
    }


def test_filter_by_glob_and_unknown_ids(demo: list[Cell]) -> None:
    assert [c.id for c in filter_cells(demo, ["py312-cu1?"])] == ["py312-cu12", "py312-cu13"]
    assert filter_cells(demo, []) == demo
    with pytest.raises(CellError, match="no cell 'py399'"):
        filter_cells(demo, ["py312-cu12", "py399"])


def test_fallback_gate_without_gpu_detection(
    monkeypatch: pytest.MonkeyPatch, demo: list[Cell], cupy: list[Cell]
) -> None:
    monkeypatch.setitem(sys.modules, "harness.gpu", None)  # importing it now raises ImportError
    gpu_cell, optional = cupy[0], demo[0]
    assert gpu_gate("skip")(gpu_cell)[0] == SKIP
    assert "CUDA 12" in gpu_gate("skip")(gpu_cell)[1]
    assert gpu_gate("require")(gpu_cell)[0] == FAIL
    assert gpu_gate("ignore")(gpu_cell) == (RUN, "")
    assert all(gpu_gate(p)(optional) == (RUN, "") for p in ("skip", "require", "ignore"))


def test_gate_on_this_gpu_less_machine(monkeypatch: pytest.MonkeyPatch, cupy: list[Cell], demo: list[Cell]) -> None:
    pytest.importorskip("harness.gpu")
    monkeypatch.delenv("CONDA_OVERRIDE_CUDA", raising=False)
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    assert gpu_gate("skip")(cupy[0])[0] == SKIP
    assert gpu_gate("skip")(demo[0])[0] == RUN


# --- one cell's process and its outcome ----------------------------------------------------------


def test_cell_argv(demo: list[Cell]) -> None:
    cell = demo[0]
    argv = cell_argv(cell, python="py", gpu_policy="ignore", extra_args=("-k", "dot"))
    assert argv == ["py", "-m", "harness", "test", "--from", str(cell.matrix), cell.id, "-q",
                    "--gpu", "ignore", "--", "-k", "dot"]
    assert "--gpu" not in cell_argv(cell, python="py")


def test_report_paths() -> None:
    out = "7 passed\nreport: /tmp/a b/run-1.json\nwarning: report: no\nreport: /x/run-2.json\n"
    assert report_paths(out) == (Path("/tmp/a b/run-1.json"), Path("/x/run-2.json"))


def _report(tmp_path: Path, cell: str, **extra: object) -> Path:
    stages = [
        {"cell": cell, "stage": "solve:host", "status": "cached", "reason": "", "duration": 0.1},
        {"cell": cell, "stage": "build", "status": "done", "reason": "", "duration": 1.0},
        {"cell": cell, "stage": "test", "status": "done", "reason": "", "duration": 0.5},
    ]
    path = tmp_path / f"run-{cell}.json"
    path.write_text(json.dumps({"stages": stages, **extra}))
    return path


def _outcome(cell: str, **over: object) -> dict[str, object]:
    base = {"cell": cell, "command": ["pytest"], "returncode": 0, "ok": True, "passed": 7,
            "failed": 0, "errors": 0, "skipped": 1, "failures": [], "junit": "/j.xml",
            "log": "/l.log", "duration": 0.5, "reason": ""}
    return {**base, **over}


def _run(tmp_path: Path, code: int, *reports: Path, tail: str = "") -> CellRun:
    return CellRun("c1", code, tmp_path / "premerge.log", reports, tail, 2.0)


def test_rows_from_the_run_report(tmp_path: Path) -> None:
    ok = _report(tmp_path, "c1", tests={"c1": _outcome("c1")})
    row = row_for(_run(tmp_path, 0, ok))
    assert (row.result, row.passed, row.skipped, row.cached, row.done) == (PASSED, 7, 1, 1, 1)

    bad = _report(tmp_path, "c1", tests={"c1": _outcome(
        "c1", returncode=1, ok=False, failed=1, failures=["tests/t.py::test_x"])})
    row = row_for(_run(tmp_path, 1, bad))
    assert row.result == RESULT_FAILED and row.failures == ("tests/t.py::test_x",)

    skipped = _report(tmp_path, "c1", skipped={"c1": "needs a CUDA 13 driver"})
    row = row_for(_run(tmp_path, 0, skipped))
    assert (row.result, row.reason) == (RESULT_SKIPPED, "needs a CUDA 13 driver")


def test_a_cell_never_passes_without_a_clean_process(tmp_path: Path) -> None:
    ok = _report(tmp_path, "c1", tests={"c1": _outcome("c1")})
    row = row_for(_run(tmp_path, 3, ok, tail="Segmentation fault"))
    assert row.result == ERROR and "exited with 3" in row.reason and "Segmentation fault" in row.reason

    row = row_for(_run(tmp_path, 2, tmp_path / "missing.json", tail="error: bad matrix"))
    assert row.result == ERROR
    assert "error: bad matrix" in row.reason and str(tmp_path / "premerge.log") in row.reason

    row = row_for(_run(tmp_path, 0))  # exit 0 but no report: nothing proves the cell ran
    assert row.result == ERROR


# --- a real pre-merge run ------------------------------------------------------------------------


@pytest.mark.slow
def test_premerge_runs_two_demo_cells_in_parallel(tmp_path: Path) -> None:
    if not any(PYENV.glob("3.12.*/bin/python3.12")) and not shutil.which("python3.12"):
        pytest.skip("no CPython 3.12 on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NOX_"))}
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-m", "harness", "premerge", "matrices/demo.toml",
         "--cell", "py312-cu12", "--cell", "py312-cu13", "-j", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {line.split()[0]: line.split()[2] for line in out.stdout.splitlines()
            if line.startswith("py312-")}
    assert rows == {"py312-cu12": "passed", "py312-cu13": "passed"}, out.stdout
    assert "2 cells: 2 passed" in out.stdout
    assert "2 of 2 cells run here, 2 at a time" in out.stderr
    for cell in ("py312-cu12", "py312-cu13"):
        log = tmp_path / "cache" / "logs" / cell / "premerge.log"
        assert "report: " in log.read_text()
    assert len(list((tmp_path / "cache" / "reports").glob("run-*.json"))) == 2
