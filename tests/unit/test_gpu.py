"""GPU runners: detecting the driver, gating cells on it, what tests see, and `harness doctor`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cache import Cache
from harness.cell import Cell
from harness.doctor import Pythons, check_cell
from harness.errors import HarnessError
from harness.frozen import FrozenDict
from harness.gpu import Gate, Runner, detect_runner, gate, gpu_env, list_gpus, worker_index
from harness.pipeline import run_cell, run_cells
from harness.report import RunReport
from harness.stages import PreparedCell

REPO = Path(__file__).resolve().parents[2]


def make_cell(gpu: str, cuda: str | None, *, cell_id: str = "c", channels: tuple[str, ...] = ("offline",),
              test_command: str | None = None, manifest: Path = Path("/src/pixi.toml")) -> Cell:
    return Cell(
        id=cell_id,
        manifest=manifest,
        environment="default",
        platform="linux-64",
        profile="dev",
        profile_base="dev",
        variant=FrozenDict({"python": "3.12.*"}),
        dependencies=(),
        pypi_dependencies=FrozenDict(),
        virtual_packages=("__unix=0", "__glibc=2.28", *((f"__cuda={cuda}",) if cuda else ())),
        channels=channels,
        activation_env=FrozenDict(),
        test_command=test_command,
        gpu=gpu,
        cuda=cuda,
        tags=(),
        package=None,
    )


def make_runner(cuda: str | None, gpus: tuple[str, ...] = ()) -> Runner:
    vps = ("__unix=0=0", "__glibc=2.36=0", *((f"__cuda={cuda}=0",) if cuda else ()))
    return Runner(platform="linux-64", virtual_packages=vps, cuda=cuda, gpus=gpus, source="detected")


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "13.x", "v13", "-1", "13..0", "12.4.1.7"])
def test_a_malformed_cuda_override_is_a_user_error_naming_the_variable(value: str) -> None:
    with pytest.raises(HarnessError) as info:
        detect_runner({"CONDA_OVERRIDE_CUDA": value, "PATH": ""})
    text = str(info.value)
    assert text.startswith("CONDA_OVERRIDE_CUDA: ") and repr(value) in text
    assert info.value.hint and "13.0" in info.value.hint


@pytest.mark.parametrize(("value", "cuda"), [("13.0", "13.0"), ("12", "12"), ("12.4", "12.4")])
def test_a_cuda_override_becomes_the_runners_driver(value: str, cuda: str) -> None:
    runner = detect_runner({"CONDA_OVERRIDE_CUDA": value, "PATH": ""})
    assert runner.cuda == cuda
    assert f"__cuda={cuda}=0" in runner.virtual_packages
    assert runner.source == f"CONDA_OVERRIDE_CUDA={value}"
    assert any(v.startswith("__glibc=") for v in runner.virtual_packages)  # the rest is still detected


def test_an_empty_cuda_override_means_no_driver() -> None:
    runner = detect_runner({"CONDA_OVERRIDE_CUDA": "", "PATH": ""})
    assert runner.cuda is None
    assert not any(v.startswith("__cuda") for v in runner.virtual_packages)


def test_detection_is_cached_per_override_value() -> None:
    first = detect_runner({"CONDA_OVERRIDE_CUDA": "12.4", "PATH": ""})
    assert detect_runner({"CONDA_OVERRIDE_CUDA": "12.4", "PATH": ""}) is first
    assert detect_runner({"CONDA_OVERRIDE_CUDA": "13.0", "PATH": ""}).cuda == "13.0"


def _fake_nvidia_smi(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return directory


def test_gpus_come_from_nvidia_smi_on_path(tmp_path: Path) -> None:
    bin_dir = _fake_nvidia_smi(
        tmp_path / "ok",
        "echo 'GPU 0: NVIDIA L4 (UUID: GPU-a)'; echo 'GPU 1: NVIDIA L4 (UUID: GPU-b)'; echo",
    )
    assert list_gpus(str(bin_dir)) == ("GPU 0: NVIDIA L4 (UUID: GPU-a)", "GPU 1: NVIDIA L4 (UUID: GPU-b)")
    runner = detect_runner({"CONDA_OVERRIDE_CUDA": "", "PATH": str(bin_dir)})
    assert len(runner.gpus) == 2


def test_a_failing_or_missing_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    broken = _fake_nvidia_smi(tmp_path / "broken", "echo 'GPU 0: NVIDIA L4'; exit 9")
    assert list_gpus(str(broken)) == ()
    assert list_gpus(str(tmp_path / "empty")) == ()


# --- gating ------------------------------------------------------------------------------

NEEDS_13_NONE = "needs a CUDA 13 driver, this runner has none"
NEEDS_13_OLD = "needs a CUDA 13 driver, this runner has CUDA 12.4"
NEEDS_12_NONE = "needs a CUDA 12 driver, this runner has none"

# (cell gpu, declared cuda, runner cuda) -> the skip reason under the default policy, None: runs
GATES = [
    ("required", "13", None, NEEDS_13_NONE),
    ("required", "13", "12.4", NEEDS_13_OLD),
    ("required", "13", "13.0", None),
    ("required", "12", None, NEEDS_12_NONE),
    ("required", "12", "12.4", None),
    ("required", "12", "13.0", None),
    ("required", "12.4", "12.4", None),
    ("optional", "13", None, None),
    ("optional", "13", "12.4", None),
    ("optional", "13", "13.0", None),
    ("none", None, None, None),
    ("none", None, "12.4", None),
    ("none", None, "13.0", None),
    ("required", None, None, None),  # a GPU cell that declares no CUDA: nothing to check
]


@pytest.mark.parametrize(("gpu", "cuda", "runner_cuda", "reason"), GATES)
@pytest.mark.parametrize("policy", ["skip", "require", "ignore"])
def test_gate_table(gpu: str, cuda: str | None, runner_cuda: str | None, reason: str | None,
                    policy: str) -> None:
    decision = gate(make_cell(gpu, cuda), make_runner(runner_cuda), policy)
    if reason is None or policy == "ignore":
        assert decision == Gate("run")
    elif policy == "skip":
        assert decision == Gate("skip", reason)
    else:
        assert decision.action == "fail"
        assert decision.reason.startswith(reason) and "require" in decision.reason


def test_an_overridden_driver_is_named_in_the_reason() -> None:
    runner = Runner("linux-64", (), "12.4", (), "CONDA_OVERRIDE_CUDA=12.4")
    assert gate(make_cell("required", "13"), runner).reason == f"{NEEDS_13_OLD} (CONDA_OVERRIDE_CUDA=12.4)"


def test_an_unknown_policy_is_a_user_error() -> None:
    with pytest.raises(HarnessError, match="unknown GPU policy 'maybe'"):
        gate(make_cell("required", "13"), make_runner(None), "maybe")
    with pytest.raises(HarnessError, match="unknown GPU policy"):
        run_cells([make_cell("none", None)], gpu_policy="always")


# --- what the test command sees -----------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "cuda", "runner_cuda", "available"),
    [
        ("required", "13", "13.0", "1"),
        ("required", "13", "12.4", "0"),  # runs only under --gpu ignore, and must know it
        ("required", "13", None, "0"),
        ("optional", "13", "13.0", "1"),
        ("optional", "13", "12.4", "0"),  # a CUDA 13 environment cannot use a 12.4 driver
        ("optional", None, "12.4", "1"),
        ("none", None, None, "0"),
    ],
)
def test_gpu_env_says_whether_the_driver_serves_the_cell(
    gpu: str, cuda: str | None, runner_cuda: str | None, available: str
) -> None:
    env = gpu_env(make_cell(gpu, cuda), make_runner(runner_cuda), environ={})
    assert env == {
        "HARNESS_GPU": gpu,
        "HARNESS_GPU_AVAILABLE": available,
        "HARNESS_CUDA": cuda or "",
        "HARNESS_RUNNER_CUDA": runner_cuda or "",
    }


THREE_GPUS = ("GPU 0: A", "GPU 1: B", "GPU 2: C")


def test_each_worker_gets_one_gpu_of_several() -> None:
    cell, runner = make_cell("required", "13"), make_runner("13.0", THREE_GPUS)
    assert gpu_env(cell, runner, worker=4, environ={})["CUDA_VISIBLE_DEVICES"] == "1"
    from_xdist = gpu_env(cell, runner, environ={"PYTEST_XDIST_WORKER": "gw2"})
    assert from_xdist["CUDA_VISIBLE_DEVICES"] == "2"
    # devices the caller already restricted to are the ones shared out
    restricted = gpu_env(cell, runner, worker=3, environ={"CUDA_VISIBLE_DEVICES": "5,7"})
    assert restricted["CUDA_VISIBLE_DEVICES"] == "7"


@pytest.mark.parametrize(
    ("gpus", "environ", "worker"),
    [
        (THREE_GPUS, {}, None),  # not a worker: every GPU stays visible
        ((), {"PYTEST_XDIST_WORKER": "gw1"}, None),  # no GPU: nothing to choose
        (("GPU 0: A",), {}, 3),  # one GPU: all workers share it
    ],
)
def test_cuda_visible_devices_is_left_alone(
    gpus: tuple[str, ...], environ: dict[str, str], worker: int | None
) -> None:
    env = gpu_env(make_cell("required", "13"), make_runner("13.0", gpus), worker=worker, environ=environ)
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_worker_index_reads_pytest_xdist() -> None:
    assert worker_index({"PYTEST_XDIST_WORKER": "gw11"}) == 11
    assert worker_index({"PYTEST_XDIST_WORKER": "master"}) is None
    assert worker_index({}) is None


def test_run_cell_lays_the_gpu_variables_over_the_test_environment(tmp_path: Path) -> None:
    script = tmp_path / "show_env.py"
    out = tmp_path / "env.json"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('HARNESS_')}}, open({str(out)!r}, 'w'))\n"
    )
    cell = make_cell("required", "13", test_command=f"{sys.executable} {script}",
                     manifest=tmp_path / "pixi.toml")
    prepared = PreparedCell(
        cell=cell, lock_path=tmp_path / "lock", prefixes=FrozenDict(), records=FrozenDict(),
        records_hashes=FrozenDict(),
        env=FrozenDict({**os.environ, "HARNESS_GPU_AVAILABLE": "stale"}),
    )
    extra = gpu_env(cell, make_runner("13.0"), environ={})
    outcome = run_cell(prepared, Cache(tmp_path / "cache"), RunReport(), echo=False, extra_env=extra)
    assert outcome.returncode == 0, outcome
    seen = json.loads(out.read_text())
    assert {k: seen.get(k) for k in extra} == extra


# --- harness doctor -------------------------------------------------------------------------


def test_doctor_checks_interpreters_only_for_offline_cells() -> None:
    asked: list[int] = []

    def discover() -> tuple[()]:
        asked.append(1)
        return ()

    pythons = Pythons(discover)
    forge = make_cell("none", None, channels=("conda-forge",))
    assert check_cell(forge, make_runner(None), pythons).runs
    assert not asked  # nothing probed for a cell whose python comes from a real channel
    offline = check_cell(make_cell("required", "13"), make_runner(None), pythons)
    assert offline.reasons == (NEEDS_13_NONE, "no CPython 3.12 on this machine (found none)")
    assert asked == [1]


def _harness(*args: str, cache: Path, override: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONDA_OVERRIDE_CUDA"}
    env["HARNESS_CACHE_DIR"] = str(cache)
    if override is not None:
        env["CONDA_OVERRIDE_CUDA"] = override
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_doctor_on_this_machine(tmp_path: Path) -> None:
    out = _harness("doctor", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert "no GPU" in rows["GPUs"]
    demo = [cid for cid in rows if cid.startswith("py3")]
    cupy = [cid for cid in rows if cid.startswith("cupy-")]
    assert len(demo) == 16 and len(cupy) == 10
    assert all(rows[cid].endswith("  runs") for cid in demo), out.stdout
    assert rows["cupy-py312-cu13"].endswith(f"cannot run: {NEEDS_13_NONE}")
    assert all("needs a CUDA" in rows[cid] for cid in cupy)
    assert not (tmp_path / "envs").exists() and not (tmp_path / "locks").exists()


def _cell_stages(stderr: str) -> list[tuple[str, str, str]]:
    report = next(line.split("report: ", 1)[1] for line in stderr.splitlines() if line.startswith("report: "))
    data = json.loads(Path(report).read_text())
    return [(r["stage"], r["status"], r["reason"]) for r in data["stages"] if r["cell"] == "cupy-py312-cu13"]


def test_a_gpu_cell_on_a_cpu_runner_is_skipped_before_anything_is_solved(tmp_path: Path) -> None:
    args = ("test", "cupy-py312-cu13", "--from", "matrices/cupy.toml")
    skipped = _harness(*args, cache=tmp_path)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert f"cupy-py312-cu13: skipped: {NEEDS_13_NONE}" in skipped.stdout
    # cupy's channel is conda-forge, unreachable here: any solve would have failed
    assert _cell_stages(skipped.stderr) == [("cell", "skipped", NEEDS_13_NONE)]

    required = _harness(*args, "--gpu", "require", cache=tmp_path)
    assert required.returncode == 1
    assert NEEDS_13_NONE in required.stdout
    assert [s[:2] for s in _cell_stages(required.stderr)] == [("cell", "failed")]

    # A build is never gated: it goes on to solve, with the cell's declared virtual packages.
    built = _harness("build", *args[1:], cache=tmp_path)
    stages = _cell_stages(built.stderr)
    assert built.returncode == 1  # conda-forge cannot be solved here
    assert stages and stages[0][0] != "cell", stages
    assert all("needs a CUDA" not in reason for _, _, reason in stages)

    pretend = _harness(*args, cache=tmp_path, override="13.0")
    stages = _cell_stages(pretend.stderr)
    assert pretend.returncode == 1  # conda-forge cannot be solved here
    assert stages and stages[0][0] != "cell"  # it went on to solve
    assert all("needs a CUDA" not in reason for _, _, reason in stages)
