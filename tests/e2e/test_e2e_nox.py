"""End to end, as a user runs it: nox sessions of the demo matrix, and ``harness test`` on a broken example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYENV = Path.home() / ".pyenv" / "versions"

pytestmark = pytest.mark.slow


def needs_python(*minors: str) -> None:
    for minor in minors:
        if not any(PYENV.glob(f"{minor}.*/bin/python{minor}")) and not shutil.which(f"python{minor}"):
            pytest.skip(f"no CPython {minor} on this machine")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NOX_", "HARNESS_"))}
    env["HARNESS_CACHE_DIR"] = str(cache)
    return env


def nox(
    cache: Path, *sessions: str, posargs: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py")]
    args += ["-s", *sessions]
    if posargs:
        args += ["--", *posargs]
    env = {**_env(cache), **(extra_env or {})}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def reports(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cache / "reports").glob("run-*.json"))]


def test_nox_runs_two_demo_cells_then_finds_everything_cached(tmp_path: Path) -> None:
    needs_python("3.12", "3.13")
    cache = tmp_path / "cache"
    first = nox(cache, "test(py312-cu13)", "test(py313-cu13)")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert "Session test(py312-cu13) was successful" in out
    assert "Session test(py313-cu13) was successful" in out
    runs = reports(cache)
    assert len(runs) == 2
    assert all(r["summary"]["build"] == {"done": 1} for r in runs)
    assert {cid for r in runs for cid in r["tests"]} == {"py312-cu13", "py313-cu13"}

    # Again, in the other order and with -k passed through to pytest: nothing but the tests runs.
    again = nox(cache, "test(py313-cu13)", "test(py312-cu13)", posargs=("-k", "dot"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for run in reports(cache)[2:]:
        summary = run["summary"]
        assert set(summary) == {"solve", "install", "build", "activate", "test"}, summary
        assert all(set(v) == {"cached"} for k, v in summary.items() if k != "test"), summary
        (outcome,) = run["tests"].values()
        assert outcome["ok"] and 0 < outcome["passed"] < 7, outcome  # only the -k selection ran


def test_a_broken_test_fails_its_cell_and_is_named_in_the_summary(tmp_path: Path) -> None:
    needs_python("3.12")
    example = tmp_path / "pointops"
    shutil.copytree(REPO / "examples" / "pointops", example, ignore=shutil.ignore_patterns(".harness"))
    (example / "tests" / "test_broken.py").write_text(
        "import pointops\n\ndef test_norm_is_broken():\n    assert pointops.norm([3.0, 4.0]) == 6.0\n"
    )
    env = {**_env(tmp_path / "cache"), "CONDA_OVERRIDE_CUDA": "13.0"}  # the manifest's cells require CUDA
    out = subprocess.run(
        [sys.executable, "-m", "harness", "test", "py312-cu13", "--from", str(example / "pixi.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout[out.stdout.rindex("cell "):]
    assert "failed" in summary
    assert "tests/test_broken.py::test_norm_is_broken" in summary
    assert "Traceback (most recent call last)" not in out.stderr


def test_a_warm_session_runs_in_noxs_own_process_and_fails_as_session_run_would(tmp_path: Path) -> None:
    needs_python("3.12")
    cache = tmp_path / "cache"
    racy = {"HARNESS_WARM_RACY_NS": "0"}  # the offline channel was just built: trust it at once
    first = nox(cache, "test(py312-cu13)", extra_env=racy)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "harness test --from" in first.stderr  # the full path: `session.run` logs its command

    warm = nox(cache, "test(py312-cu13)", posargs=("-k", "dot"), extra_env=racy)
    out = warm.stdout + warm.stderr
    assert warm.returncode == 0, out[-3000:]
    assert "warm start" in out and "harness test --from" not in warm.stderr  # no second process
    (run,) = reports(cache)[1:]
    assert run["warm"] is True
    (outcome,) = run["tests"].values()
    assert outcome["ok"] and 0 < outcome["passed"] < 7, outcome  # -k reached pytest

    broken = nox(cache, "test(py312-cu13)", posargs=("-k", "no_such_test"), extra_env=racy)
    out = broken.stdout + broken.stderr
    assert broken.returncode == 1, out[-3000:]
    assert reports(cache)[-1]["warm"] is True
    assert "failed with exit code 1" in out and "Session test(py312-cu13) failed" in out
