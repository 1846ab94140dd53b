"""DESIGN invariant 5 with many processes: 2, 4 or 8 ``harness test`` runs of one cell at once.

Every process is started and has imported the harness before any of them
begins (they wait on a barrier file), so they contend for the cell from the
first stage on.  They serialise on the cell's lock: exactly one of them
solves, installs and builds, every other one finds each stage cached, and all
of them run the tests and pass.  What they leave is one complete prefix per
role, one build directory, one artifact, and no temporary file or marker.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_env_faults import (
    RUN_TIMEOUT,
    FaultProject,
    Leftovers,
    Run,
    check_recovered_run,
    make_fault_project,
    verify_complete,
    wait_ready,
)

pytestmark = pytest.mark.slow

CELL = "cell-release"  # the profile with the most stages (build, then a solve against it)


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory: pytest.TempPathFactory) -> FaultProject:
    return make_fault_project(tmp_path_factory.mktemp("concurrency"))


@pytest.mark.parametrize("processes", [2, 4, 8])
def test_processes_on_one_cell_share_one_result(
    processes: int, shared_project: FaultProject, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(processes)]
    procs = [shared_project.launch(root, CELL, r, go) for r in ready]
    try:
        for proc, flag in zip(procs, ready, strict=True):
            wait_ready(proc, flag)
        go.touch()  # the barrier: all of them start now
        runs: list[Run] = []
        for proc in procs:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
            runs.append(Run(proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    for run in runs:
        check_recovered_run(run, CELL)  # exit 0, the cell's test passed
    reports = [run.report for run in runs]
    stages = [(s["stage"], s["status"]) for r in reports for s in r["stages"] if s["stage"] != "test"]
    per_stage: dict[str, Counter[str]] = {}
    for stage, status in stages:
        per_stage.setdefault(stage, Counter())[status] += 1
    expected = {"solve:build", "solve:host", "install:build", "install:host", "build",
                "solve:test", "install:test", "activate"}
    assert set(per_stage) == expected, sorted(per_stage)
    for stage, counts in per_stage.items():
        assert counts == {"done": 1, "cached": processes - 1}, (stage, dict(counts))
    workers = [r["pid"] for r in reports if r["summary"]["build"].get("done")]
    assert len(workers) == 1
    busy = [r["pid"] for r in reports if any(
        s["status"] == "done" for s in r["stages"] if s["stage"] != "test"
    )]
    assert busy == workers, "the process that built is the one that did every other stage"

    verify_complete(shared_project, root, CELL)  # one artifact, one build dir, complete prefixes
    left = Leftovers.of(root)
    assert not left.tmp and not left.prefix_markers and not left.build_markers, left
