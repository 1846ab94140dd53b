"""Variant isolation, proved with real builds of the pointops example (DESIGN invariants 1-3).

The seed's two pixi bugs are reproduced here as they were reported: the cu128
environment got the cu129 build, and the py312 environment got the extension
built for 3.13.  Every claim is a count from the run report or a file on
disk; the example's own tests check, inside each test prefix, that the
imported extension was built for that prefix's interpreter and cuda-version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.cache import Cache
from harness.cell import Cell
from harness.channel import CUDA_VERSIONS, OfflineChannel
from harness.compile import compile_manifest
from harness.manifest.read import load_manifest
from harness.pipeline import RunResult, run_cells
from harness.stages import plan

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pointops"
PYENV = Path.home() / ".pyenv" / "versions"

pytestmark = pytest.mark.slow

PACKAGE = """
[package]
name = "pointops"
version = "0.1.0"
[package.build]
backend = { name = "pixi-build-python", version = "*" }
[package.build.config]
noarch = false
env = { POINTOPS_BUILD_JOBS = "$(nproc)" }
[package.host-dependencies]
python = "*"
setuptools = "*"
cuda-version = "*"
[package.run-dependencies]
python = "*"
cuda-version = "*"
%(run_extra)s
[dependencies]
pointops = { path = "." }
%(deps)s
[feature.test.dependencies]
pytest = "*"
[tasks]
test = "python -m pytest tests -q"
"""


def needs_python(*minors: str) -> None:
    for minor in minors:
        if not any(PYENV.glob(f"{minor}.*/bin/python{minor}")) and not shutil.which(f"python{minor}"):
            pytest.skip(f"no CPython {minor} on this machine")


def manifest(
    channels: Sequence[str], body: str, *, run_extra: str = 'packaging = "*"', deps: str = 'python = "3.12.*"'
) -> str:
    chans = ", ".join(f'"{c}"' for c in channels)
    head = f'[workspace]\nchannels = [{chans}]\nplatforms = ["linux-64"]\npreview = ["pixi-build"]\n'
    return head + body + PACKAGE % {"run_extra": run_extra, "deps": deps}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """A git checkout of the example's sources with the given pixi.toml; its cache beside it."""
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    # These cells declare `cuda = "12"`/`"13"` (a GPU requirement): simulate a CUDA 13 driver.
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "13.0")
    root = tmp_path / "pointops"

    def make(text: str) -> Path:
        if not root.exists():
            shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".harness", "__pycache__", "pixi.toml"))
            (root / "pixi.toml").write_text(text)
            git(root, "init", "-q")
            git(root, "add", "-A")
            git(root, "commit", "-qm", "example")
        else:
            (root / "pixi.toml").write_text(text)
        return root

    return make


def cells_of(root: Path, *ids: str) -> list[Cell]:
    cells = {c.id: c for c in compile_manifest(load_manifest(root / "pixi.toml")).cells}
    return [cells[i] for i in ids] if ids else list(cells.values())


def run(cells: Sequence[Cell]) -> RunResult:
    result = run_cells(cells, echo=False)
    assert not result.errors, dict(result.errors)
    return result


def builds(result: RunResult) -> dict[str, int]:
    return dict(result.report.counts("build"))


def artifact_dirs(root: Path) -> list[Path]:
    return sorted((root / ".harness" / "artifacts" / "pointops").iterdir())


def build_dirs(root: Path) -> list[Path]:
    return sorted((root / ".harness" / "build" / "pointops").iterdir())


def site_packages(root: Path, cell: str, minor: str) -> Path:
    return root / ".harness" / "envs" / cell / "test" / "lib" / f"python{minor}" / "site-packages"


CUDA_BODY = """
[workspace.build-variants]
python = ["3.12.*"]
cuda-version = ["12.8.*", "12.9.*"]
[feature.cu128.system-requirements]
cuda = "12"
[feature.cu128.dependencies]
cuda-version = "12.8.*"
[feature.cu129.system-requirements]
cuda = "12"
[feature.cu129.dependencies]
cuda-version = "12.9.*"
[environments]
cu128 = ["cu128", "test"]
cu129 = ["cu129", "test"]
"""


def test_seed_reproducer_cu129_then_cu128_builds_twice(project, offline_channel: OfflineChannel) -> None:
    needs_python("3.12")
    root = project(manifest([offline_channel.url], CUDA_BODY))
    first = run(cells_of(root, "cu129"))
    second = run(cells_of(root, "cu128"))
    # Two variants: two builds (the second is not "cached" from the first), two artifacts.
    assert builds(first) == {"done": 1} and builds(second) == {"done": 1}
    assert len(artifact_dirs(root)) == 2 and len(build_dirs(root)) == 2
    # The example's own test compares the extension's baked-in CUDA version with the
    # prefix's cuda-version package: both environments pass, so each has its own build.
    for result in (first, second):
        ((cid, outcome),) = result.outcomes.items()
        assert outcome.ok and outcome.passed >= 7 and outcome.skipped == 0, (cid, outcome)
    again = run(cells_of(root))
    assert builds(again) == {"cached": 2}


def test_seed_reproducer_py313_then_py312_gets_a_312_extension(project, offline_channel: OfflineChannel) -> None:
    needs_python("3.12", "3.13")
    body = (EXAMPLE / "pixi.toml").read_text().split("[package]")[0].split("[workspace.build-variants]")[1]
    root = project(manifest([offline_channel.url], "[workspace.build-variants]" + body.replace(
        '[feature.test.dependencies]\npytest = "*"\n', ""), deps=""))
    first = run(cells_of(root, "py313-cu13"))
    second = run(cells_of(root, "py312-cu13"))
    assert builds(first) == {"done": 1} and builds(second) == {"done": 1}
    ext312 = list((site_packages(root, "py312-cu13", "3.12") / "pointops").glob("_core*.so"))
    ext313 = list((site_packages(root, "py313-cu13", "3.13") / "pointops").glob("_core*.so"))
    assert [p.name for p in ext312] == ["_core.cpython-312-x86_64-linux-gnu.so"]
    assert [p.name for p in ext313] == ["_core.cpython-313-x86_64-linux-gnu.so"]
    assert all(o.ok and o.passed >= 7 for o in (*first.outcomes.values(), *second.outcomes.values()))


MIXED_BODY = """
[workspace.build-variants]
python = ["3.12.*"]
cuda-version = ["12.*", "13.*"]
[feature.cu12.system-requirements]
cuda = "12"
[feature.cu12.dependencies]
cuda-version = "12.*"
[feature.cu13.system-requirements]
cuda = "13"
[feature.cu13.dependencies]
cuda-version = "13.*"
[environments]
cu12 = ["cu12", "test"]
cu13 = ["cu13", "test"]
cu12-release = { features = ["cu12", "test"], profile = "release" }
cu13-release = { features = ["cu13", "test"], profile = "release" }
%(profiles)s
"""


def extra_channel(path: Path, versions: Sequence[str]) -> str:
    """A higher-priority channel holding ``cuda-version`` packages.

    It starts with byte-identical copies of the offline channel's (same sha256:
    the key must not see which channel, URL or directory a package came from);
    adding a version later changes the host environment of the cells that pick it.
    """
    from harness.build.package import index_channel
    from harness.channel.conda_pkg import write_package
    from harness.channel.cuda import cuda_version_package

    for sub in ("noarch", "linux-64"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for version in versions:
        write_package(cuda_version_package(version), path / "noarch")
    index_channel(path)
    return path.as_uri()


def test_only_what_changed_is_rebuilt(project, offline_channel: OfflineChannel, tmp_path: Path) -> None:
    needs_python("3.12")
    extra = extra_channel(tmp_path / "extra", CUDA_VERSIONS)
    text = manifest([extra, offline_channel.url], MIXED_BODY % {"profiles": ""})
    root = project(text)
    cells = cells_of(root)
    assert len(cells) == 4
    first = run(cells)
    assert builds(first) == {"done": 4}
    assert all(o.ok for o in first.outcomes.values()), first.outcomes
    keys = {p.name for p in build_dirs(root)}
    assert len(keys) == 4
    # Each build directory keeps what makes a rebuild incremental (the compiled
    # objects), and no second copy of what its artifact holds.
    for build in build_dirs(root):
        assert list(build.rglob("*.o")), sorted(build.rglob("*"))
        assert not (build / "_install").exists(), build
        assert not list(build.rglob("*.whl")), build

    # Invariant 2: nothing is redone.
    again = run(cells)
    assert builds(again) == {"cached": 4}
    for kind in ("solve", "install"):
        assert again.report.counts(kind)["done"] == 0, kind

    # Invariant 3: four builds wrote nothing into the source tree.
    assert git(root, "status", "--porcelain") == ""

    # One source file changes: every cell rebuilds its artifact, in its own build directory.
    assert {s.stage: s.status for s in plan(cells[0], Cache.for_manifest(root / "pixi.toml"))}["build"] == "cached"
    core = root / "src" / "pointops" / "_core.c"
    core.write_text(core.read_text() + "\n/* edited */\n")
    step = {s.stage: s for s in plan(cells[0], Cache.for_manifest(root / "pixi.toml"))}["build"]
    assert (step.status, step.reason) == ("to do", "sources changed; the build directory is reused")
    edited = run(cells)
    assert builds(edited) == {"done": 4}
    assert {p.name for p in build_dirs(root)} == keys
    assert len(artifact_dirs(root)) == 8
    assert all(o.ok for o in edited.outcomes.values())

    # A profile override changes only the cells of that profile.
    root = project(manifest([extra, offline_channel.url], MIXED_BODY % {
        "profiles": '[profiles.release.packages.pointops]\nenv = { POINTOPS_FLAVOUR = "lean" }'}))
    profiled = run(cells_of(root))
    per_cell = {c: dict(profiled.report.counts("build", cell=c)) for c in profiled.cells}
    assert per_cell == {"cu12": {"cached": 1}, "cu13": {"cached": 1},
                        "cu12-release": {"done": 1}, "cu13-release": {"done": 1}}

    # A new host package (cuda-version 12.99 appears in a channel): only the cu12 cells.
    extra_channel(tmp_path / "extra", ["12.99"])  # the newest 12.x: only cu12 hosts change
    hosted = run(cells_of(root))
    per_cell = {c: dict(hosted.report.counts("build", cell=c)) for c in hosted.cells}
    assert per_cell == {"cu12": {"done": 1}, "cu13": {"cached": 1},
                        "cu12-release": {"done": 1}, "cu13-release": {"cached": 1}}
    assert all(o.ok for o in hosted.outcomes.values()), hosted.outcomes
    assert git(root, "status", "--porcelain") == " M pixi.toml\n M src/pointops/_core.c\n"


def test_release_build_that_forgets_a_run_dependency_fails(project, offline_channel: OfflineChannel) -> None:
    needs_python("3.12")
    text = manifest([offline_channel.url], MIXED_BODY % {"profiles": ""}, run_extra="")
    root = project(text)
    result = run_cells(cells_of(root, "cu13", "cu13-release"), echo=False)
    assert not result.errors
    dev, release = result.outcomes["cu13"], result.outcomes["cu13-release"]
    # dev is a development environment (pytest brings packaging along): it passes.
    assert dev.ok
    # release installs the package through the solver into a prefix of its own: the
    # import fails, and the cell says which run-dependency is missing and where to add it.
    assert not release.ok
    assert "run-dependencies" in release.reason
    assert "No module named 'packaging'" in release.reason
    assert dict(result.report.counts("test", cell="cu13-release")) == {"failed": 1}
    # The import check has its own prefix, and plan knows it: everything is current now.
    steps = {s.stage: s.status for s in plan(cells_of(root, "cu13-release")[0], Cache.for_manifest(root / "pixi.toml"))}
    assert steps["solve:import"] == steps["install:import"] == steps["build"] == "cached", steps


def test_two_processes_building_one_cell_build_once(project, offline_channel: OfflineChannel) -> None:
    needs_python("3.12")
    root = project(manifest([offline_channel.url], CUDA_BODY))
    argv = [sys.executable, "-m", "harness", "build", "cu128", "--from", str(root / "pixi.toml"), "-q"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = [json.loads(p.read_text()) for p in (root / ".harness" / "reports").glob("run-*.json")]
    assert len(runs) == 2
    # One process built, the other waited on the locks and found the artifact.
    assert sorted(tuple(sorted(r["summary"]["build"].items())) for r in runs) == [
        (("cached", 1),), (("done", 1),)]
    assert len(artifact_dirs(root)) == 1


def test_building_the_real_example_leaves_the_checkout_clean(
    offline_channel: OfflineChannel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_python("3.12")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    before = git(REPO, "status", "--porcelain", "--ignored", "--", "examples/pointops")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    from harness.loader import compile_path

    cells = {c.id: c for c in compile_path(REPO / "matrices" / "demo.toml").cells}
    result = run([cells["py312-cu13"], cells["py312-cu13-release"]])
    assert builds(result) == {"done": 2}
    assert all(o.ok for o in result.outcomes.values()), result.outcomes
    assert git(REPO, "status", "--porcelain", "--ignored", "--", "examples/pointops") == before


def test_a_python_the_machine_lacks_skips_the_cell_with_the_reason(project) -> None:
    body = """
[workspace.build-variants]
python = ["3.99.*"]
cuda-version = ["12.8.*"]
[feature.py399.dependencies]
python = "3.99.*"
cuda-version = "12.8.*"
[environments]
py399 = ["py399", "test"]
"""
    root = project(manifest(["offline"], body, deps=""))
    result = run_cells(cells_of(root, "py399"), echo=False)
    assert not result.errors and not result.outcomes
    assert result.skipped["py399"].startswith("no CPython 3.99 on this machine (found ")
    assert dict(result.report.counts("cell")) == {"skipped": 1}


def test_an_unknown_backend_names_the_known_ones(project, offline_channel: OfflineChannel) -> None:
    text = manifest([offline_channel.url], CUDA_BODY).replace('"pixi-build-python"', '"pixi-build-zig"')
    root = project(text)
    result = run_cells(cells_of(root, "cu128"), echo=False)
    message = result.errors["cu128"]
    assert "unknown build backend 'pixi-build-zig'" in message and "package.build.backend" in message
    assert "pixi-build-cmake, pixi-build-python, pixi-build-rattler-build" in message


OPEN_PYTHON_BODY = """
[workspace.build-variants]
python = ["3.10.*", "3.11.*", "3.12.*", "3.13.*"]
cuda-version = ["13.*"]
[environments]
test = ["test"]
"""


def test_one_environment_over_four_pythons_runs_as_four_cells(project, offline_channel: OfflineChannel) -> None:
    """An environment that leaves python open is one cell per value, each with its own build."""
    needs_python("3.10", "3.11", "3.12", "3.13")
    root = project(manifest([offline_channel.url], OPEN_PYTHON_BODY, deps=""))
    cells = cells_of(root)
    assert [c.id for c in cells] == ["test-py310", "test-py311", "test-py312", "test-py313"]
    result = run(cells)
    assert builds(result) == {"done": 4}
    assert len(build_dirs(root)) == 4 and len(artifact_dirs(root)) == 4
    for minor in ("10", "11", "12", "13"):
        ext = list((site_packages(root, f"test-py3{minor}", f"3.{minor}") / "pointops").glob("_core*.so"))
        assert [p.name for p in ext] == [f"_core.cpython-3{minor}-x86_64-linux-gnu.so"]
    assert len(result.outcomes) == 4
    assert all(o.ok and o.passed >= 7 for o in result.outcomes.values()), result.outcomes
    assert builds(run(cells)) == {"cached": 4}
