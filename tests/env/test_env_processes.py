"""Invariants 4 and 5 across processes: a killed install is redone; two processes share a cell safely."""

from __future__ import annotations

import random
import time
import warnings

from filelock import FileLock, Timeout

from harness.lock import StaleLockWarning
from harness.prefix import INCOMPLETE, prefix_state, verify_prefix
from harness.report import RunReport
from harness.stages import plan, prepare


def _statuses(result, kind):
    return [status for stage, status, _ in result["stages"] if stage.split(":")[0] == kind]


def test_install_killed_mid_way_is_redone(make_cell, cache, spawn, tmp_path, wait_for):
    cell = make_cell("killed", deps=["app", "libbar"])
    pause = tmp_path / "paused"
    runner = spawn(cell, cache, pause_file=pause)
    wait_for(pause.exists, "the install to reach its pause point")
    runner.kill()  # SIGKILL: files linked, prefix not marked complete

    prefix = cache.prefix(cell.id, "test")
    assert (prefix / "conda-meta").is_dir()
    steps = {s.stage: s for s in plan(cell, cache)}
    assert steps["solve:test"].status == "cached"  # the lock was published before the install
    assert steps["install:test"].reason == "prefix incomplete (interrupted run)"

    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    assert report.counts("solve") == {"cached": 1}
    assert report.counts("install") == {"done": 1}
    assert report.select("install")[0].reason == "prefix incomplete (interrupted run)"
    assert verify_prefix(prefix, prepared.records["test"]) == []

    again = RunReport()
    prepare(cell, cache=cache, report=again)
    assert again.counts() == {"cached": 3}  # solve, install, activate


def test_kill_at_random_points_never_leaves_trusted_garbage(make_cell, cache, spawn, wait_for):
    """SIGKILL at a random moment (during imports, solve, lock writing or install), then re-run."""
    rng = random.Random(20240607)
    for attempt in range(6):
        cell = make_cell(f"random-kill-{attempt}", deps=["app", "libbar", "cudakernel"], cuda="12")
        runner = spawn(cell, cache)
        wait_for(runner.started.exists, "the runner to start prepare")
        # the kill point, spread over the ~30 ms prepare takes (not an assertion on timing)
        time.sleep(attempt * 0.006 + rng.uniform(0.0, 0.004))
        runner.kill()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prepared = prepare(cell, cache=cache, report=RunReport())
        # A kill between the lock and its inputs record leaves a lock nobody may trust:
        # the run says so and solves again; it says nothing else.
        assert all(issubclass(w.category, StaleLockWarning) for w in caught), [str(w.message) for w in caught]
        assert verify_prefix(prepared.test_prefix, prepared.records["test"]) == []
        assert prefix_state(
            prepared.test_prefix, prepared.records_hashes["test"], prepared.records["test"]
        ).current
        again = RunReport()
        prepare(cell, cache=cache, report=again)
        assert again.counts()["done"] == 0


def test_two_processes_on_one_cell(make_cell, cache, spawn, tmp_path, wait_for):
    cell = make_cell("shared", deps=["app", "libbar"])
    pause = tmp_path / "first-paused"
    first = spawn(cell, cache, pause_file=pause)
    wait_for(pause.exists, "the first process to be mid-install")
    # the first process holds the cell lock while it installs
    try:
        FileLock(cache.locks_dir / f"cell-{cell.id}.lock", timeout=0).acquire()
        raise AssertionError("the cell lock should be held by the first process")
    except Timeout:
        pass
    state = prefix_state(cache.prefix(cell.id, "test"), "", ())
    assert state.status == INCOMPLETE

    second = spawn(cell, cache)
    wait_for(second.started.exists, "the second process to call prepare")
    assert second.proc.poll() is None  # it cannot finish while the first holds the lock
    pause.unlink()  # let the first one finish

    results = [first.wait_result(), second.wait_result()]
    installs = sorted(_statuses(r, "install")[0] for r in results)
    solves = sorted(_statuses(r, "solve")[0] for r in results)
    assert installs == ["cached", "done"]
    assert solves == ["cached", "done"]
    for result in results:
        assert result["problems"] == {"test": []}
