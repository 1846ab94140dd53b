"""The warm start, as a user meets it: `harness test CELL` again on an unchanged cell.

A re-run must do what a full run does once every stage is cached (same test
command, same environment, same reports) and must never run when anything the
cell depends on changed: each change below sends the run down the full path,
which says what it redid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from harness.channel import OfflineChannel

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pointops"
PYENV = Path.home() / ".pyenv" / "versions"
CELL = "py312-cu13"

pytestmark = pytest.mark.slow


def needs_python(minor: str) -> None:
    if not any(PYENV.glob(f"{minor}.*/bin/python{minor}")) and not shutil.which(f"python{minor}"):
        pytest.skip(f"no CPython {minor} on this machine")


@pytest.fixture
def project(tmp_path: Path, offline_channel: OfflineChannel) -> Path:
    """A git checkout of the example, its cache holding a copy of the session's offline channel."""
    needs_python("3.12")
    root = tmp_path / "pointops"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".harness", "__pycache__"))
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    shutil.copytree(offline_channel.path, tmp_path / "cache" / "channels" / "offline", copy_function=os.link)
    return root


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_"))}
    env.update(
        HARNESS_CACHE_DIR=str(tmp_path / "cache"),
        HARNESS_WARM_RACY_NS="0",  # the copies above are fresh; edits below change sizes or inodes
        CONDA_OVERRIDE_CUDA="13.0",
    )
    env.update(extra)
    return env


def harness_test(project: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run `harness test` and return the process and the run report it wrote."""
    cache = Path(env["HARNESS_CACHE_DIR"])
    before = set((cache / "reports").glob("run-*.json"))
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "test", "--from", str(project / "pixi.toml"), CELL, *extra],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    (new,) = set((cache / "reports").glob("run-*.json")) - before
    return proc, json.loads(new.read_text())


def is_warm(report: dict) -> bool:
    return bool(report.get("warm"))


def statuses(report: dict) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in report["stages"] if r["cell"] == CELL}


def test_an_unchanged_cell_starts_warm_and_every_change_takes_the_full_path(project: Path, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    first, report = harness_test(project, env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert not is_warm(report) and statuses(report)["build"] == "done"
    full_counts = report["tests"][CELL]

    again, report = harness_test(project, env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert is_warm(report), again.stderr
    assert "warm start" in again.stderr
    stages = statuses(report)
    assert stages.pop("test") == "done"
    assert set(stages.values()) == {"cached"} and "build" in stages and "install:test" in stages
    warm_counts = report["tests"][CELL]
    assert warm_counts["passed"] == full_counts["passed"] >= 7
    assert (warm_counts["failed"], warm_counts["skipped"]) == (full_counts["failed"], full_counts["skipped"])
    assert "1 cell: 1 passed" in again.stdout

    # Arguments after -- reach the test command on the warm path too; a failing run fails the cell.
    failing, report = harness_test(project, env, "--", "-k", "no_such_test")
    assert is_warm(report) and failing.returncode == 1
    assert "no tests were collected" in failing.stdout

    # A source edit: the full path rebuilds (the extension reads the new source).
    source = project / "src" / "pointops" / "_core.c"
    source.write_text(source.read_text() + "\n/* edited */\n")
    edited, report = harness_test(project, env)
    assert edited.returncode == 0 and not is_warm(report)
    assert statuses(report)["build"] == "done"
    _, report = harness_test(project, env)
    assert is_warm(report)

    # A new file in the tree (git would list it), a changed driver, a changed manifest.
    (project / "src" / "pointops" / "extra.py").write_text("X = 1\n")
    _, report = harness_test(project, env)
    assert not is_warm(report) and statuses(report)["build"] == "done"
    _, report = harness_test(project, env_for(tmp_path, CONDA_OVERRIDE_CUDA="13.1"))
    assert not is_warm(report)
    manifest = project / "pixi.toml"
    manifest.write_text(manifest.read_text() + "\n# a comment\n")
    _, report = harness_test(project, env)
    assert not is_warm(report)
    _, report = harness_test(project, env)
    assert is_warm(report)


def test_damaged_state_is_never_replayed(project: Path, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    harness_test(project, env)
    cache = tmp_path / "cache"
    _, report = harness_test(project, env)
    assert is_warm(report)

    # The installed marker of the test prefix is rewritten (as an interrupted install would leave it).
    marker = cache / "envs" / CELL / "test" / "conda-meta" / "harness-installed"
    text = marker.read_text()
    marker.unlink()
    marker.write_text(text)
    _, report = harness_test(project, env)
    assert not is_warm(report)

    # A record edited by hand is never trusted, and never a traceback.
    record = cache / "warm" / f"{CELL}.json"
    record.write_text(json.dumps({"format": 1, "cell": CELL, "inputs": []}))
    proc, report = harness_test(project, env)
    assert proc.returncode == 0 and not is_warm(report) and "Traceback" not in proc.stderr

    # The lock is replaced: the full path checks it against its sidecar.
    lock = cache / "solve" / CELL / "pixi.lock"
    _, report = harness_test(project, env)
    assert is_warm(report)
    lock.write_text(lock.read_text() + "\n")
    proc, report = harness_test(project, env)
    assert proc.returncode == 0 and not is_warm(report)
    assert any(r["stage"].startswith("solve") and r["status"] == "done" for r in report["stages"])


def test_a_record_taken_right_after_a_change_is_not_trusted(project: Path, tmp_path: Path) -> None:
    """The racy window: an input modified within two seconds of the snapshot could change again unseen."""
    env = env_for(tmp_path)
    del env["HARNESS_WARM_RACY_NS"]
    harness_test(project, env)
    _, report = harness_test(project, env)  # the copy of the example is seconds old
    assert not is_warm(report)


def test_a_busy_cell_is_not_replayed_in_process(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import warmstart

    env = env_for(tmp_path)
    harness_test(project, env)
    for name in [k for k in os.environ if k.startswith("HARNESS_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(project)
    argv = ["test", "--from", str(project / "pixi.toml"), CELL]
    record = json.loads((tmp_path / "cache" / "warm" / f"{CELL}.json").read_text())
    assert warmstart.check_record(record) is None  # replayable, but for the lock:
    with FileLock(tmp_path / "cache" / "locks" / f"cell-{CELL}.lock"):
        assert warmstart.try_warm(argv) is None  # another run holds the cell
    assert warmstart.try_warm(["test", "--update", "--from", str(project / "pixi.toml"), CELL]) is None
