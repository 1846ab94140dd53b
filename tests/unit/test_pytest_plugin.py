"""The pytest front-end: matrix files collected as tests, one item per cell.

Collection, selection and result rendering run in-process over a stand-in
``run_cells`` (no solve, no build); three tests build real demo cells.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness import pipeline
from harness.cell import Cell
from harness.frozen import FrozenDict
from harness.pytest_plugin import cells, describe_failure, is_matrix_file, locate
from harness.report import RunReport
from harness.run import TestOutcome

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "matrices" / "demo.toml"
CUPY = REPO / "matrices" / "cupy.toml"
POINTOPS = REPO / "examples" / "pointops" / "pixi.toml"
HOME = Path.home()  # pytester points HOME elsewhere; the offline channel finds pyenv through it
PYENV = HOME / ".pyenv" / "versions"
CUPY_IDS = [f"cupy-py3{minor}-cu{cuda}" for minor in (10, 11, 12, 13, 14) for cuda in (12, 13)]
HAS_GPU_POLICY = "gpu_policy" in inspect.signature(pipeline.run_cells).parameters
HAS_GPU_GATE = importlib.util.find_spec("harness.gpu") is not None


def needs_python(*minors: str) -> None:
    for minor in minors:
        if not any(PYENV.glob(f"{minor}.*/bin/python{minor}")) and not shutil.which(f"python{minor}"):
            pytest.skip(f"no CPython {minor} on this machine")


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in ET.parse(path).getroot().iter("testcase")}


def properties(case: ET.Element) -> list[tuple[str, str]]:
    return [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


@pytest.fixture
def in_repo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    """pytester run from the repository root, as a user types ``pytest matrices/...``,
    with a cache of its own and this machine's home (pyenv, wheel cache)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(HOME))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONDA_OVERRIDE_CUDA", raising=False)
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    return pytester


# -- collection ---------------------------------------------------------------------------


def test_a_matrix_file_gives_one_item_per_cell(in_repo: pytest.Pytester) -> None:
    result = in_repo.runpytest("--co", "-q", "matrices/cupy.toml")
    assert collected(result) == [f"matrices/cupy.toml::{cid}" for cid in CUPY_IDS]


def test_k_selects_cells_by_id_and_by_tag(in_repo: pytest.Pytester) -> None:
    one = in_repo.runpytest("--co", "-q", "matrices/cupy.toml", "-k", "py312 and cu13")
    assert collected(one) == ["matrices/cupy.toml::cupy-py312-cu13"]
    demo = in_repo.runpytest("--co", "-q", "matrices/demo.toml", "-k", "py312-cu13 and not release")
    assert collected(demo) == ["matrices/demo.toml::py312-cu13"]
    # The cells' tags are keywords too: the demo's are cpu/gpu-optional, cupy's gpu only.
    gpu = in_repo.runpytest("--co", "-q", "matrices/", "-k", "gpu and not optional")
    assert collected(gpu) == [f"matrices/cupy.toml::{cid}" for cid in CUPY_IDS]


def _local_matrix(pytester: pytest.Pytester, path: str) -> None:
    target = pytester.path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(textwrap.dedent(f"""\
        manifest = "{POINTOPS}"
        environment = "default"
        name = "local-py{{python}}"

        [axes.python]
        values = ["3.12"]
        dependencies = {{ python = "{{value}}.*", cuda-version = "13.*" }}
        features = ["test"]
        """))


def test_matrix_files_are_collected_only_when_named(pytester: pytest.Pytester) -> None:
    _local_matrix(pytester, "matrices/m.toml")
    _local_matrix(pytester, "other/plain-name.toml")
    (pytester.path / "other" / "settings.toml").write_text('answer = 42\n')
    (pytester.path / "other" / "pixi.toml").write_text('[workspace]\nname = "x"\n')
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")

    # A bare pytest runs the project's tests, never the matrix.
    assert collected(pytester.runpytest("--co", "-q")) == ["test_ok.py::test_ok"]
    assert collected(pytester.runpytest("--co", "-q", ".")) == ["test_ok.py::test_ok"]
    # Named, or held by a named directory: every file of matrices/, and in other
    # directories the files that name a manifest (never a manifest itself).
    assert collected(pytester.runpytest("--co", "-q", "matrices")) == ["matrices/m.toml::local-py312"]
    assert collected(pytester.runpytest("--co", "-q", "other")) == ["other/plain-name.toml::local-py312"]
    assert collected(pytester.runpytest("--co", "-q", "other/plain-name.toml::local-py312")) == [
        "other/plain-name.toml::local-py312"
    ]


def test_is_matrix_file() -> None:
    assert is_matrix_file(DEMO)
    assert not is_matrix_file(POINTOPS)
    assert not is_matrix_file(REPO / "pyproject.toml")
    assert not is_matrix_file(REPO / "harness" / "pytest_plugin.py")


def test_a_broken_matrix_is_a_collection_error_without_traceback(pytester: pytest.Pytester) -> None:
    (pytester.path / "matrices").mkdir()
    (pytester.path / "matrices" / "bad.toml").write_text(
        f'manifest = "{POINTOPS}"\nenvironment = "nope"\nname = "x-py{{python}}"\n'
        '[axes.python]\nvalues = ["3.12"]\n'
    )
    (pytester.path / "matrices" / "broken.toml").write_text("manifest = [\n")
    result = pytester.runpytest("matrices")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting matrices/bad.toml*",
        "*matrices/bad.toml: environment: environment 'nope' is not defined in pixi.toml",
        "  hint: known environments: default, *",
        "*ERROR collecting matrices/broken.toml*",
        "*matrices/broken.toml:*: invalid TOML*",
    ])
    assert "Traceback" not in result.stdout.str()
    assert "harness/" not in result.stdout.str().replace(str(pytester.path), "")


# -- running items (over a stand-in run_cells) ------------------------------------------------


def _outcome(cell: str, *, passed: int, failures: tuple[str, ...] = (), reason: str = "") -> TestOutcome:
    return TestOutcome(
        cell=cell, command=("python", "-m", "pytest", "tests"), returncode=1 if failures else 0,
        passed=passed, failed=len(failures), errors=0, skipped=1, failures=failures,
        junit=Path(f"/cache/reports/junit/{cell}.xml"), log=Path(f"/cache/logs/{cell}/test.log"),
        duration=0.1, reason=reason,
    )


def _stand_in(
    outcomes: Mapping[str, TestOutcome], skipped: Mapping[str, str], errors: Mapping[str, str],
    calls: list[dict[str, Any]],
) -> Callable[..., pipeline.RunResult]:
    def run_cells(
        cells: list[Cell], *, extra_args: tuple[str, ...] = (), test: bool = True, build: bool = True,
        update: bool = False, listener: object = None, echo: bool = True, gpu_policy: str = "skip",
    ) -> pipeline.RunResult:
        ids = [c.id for c in cells]
        calls.append({"cells": ids, "update": update, "echo": echo, "gpu_policy": gpu_policy})
        return pipeline.RunResult(
            report=RunReport(),
            outcomes=FrozenDict({k: v for k, v in outcomes.items() if k in ids}),
            skipped=FrozenDict({k: v for k, v in skipped.items() if k in ids}),
            errors=FrozenDict({k: v for k, v in errors.items() if k in ids}),
            cells=tuple(ids),
        )

    return run_cells


def test_items_pass_fail_and_skip_as_their_cells_did(
    in_repo: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(pipeline, "run_cells", _stand_in(
        outcomes={
            "py310-cu12": _outcome("py310-cu12", passed=7),
            "py311-cu12": _outcome(
                "py311-cu12", passed=6, failures=("tests/test_pointops.py::test_norm",),
                reason="the build is for another variant",
            ),
        },
        skipped={"py312-cu12": "no interpreter matches python 3.12.*"},
        errors={"py313-cu12": "cell 'py313-cu12': build failed\n  hint: read the build log"},
        calls=calls,
    ))
    junit = tmp_path / "outer.xml"
    result = in_repo.runpytest(
        "matrices/demo.toml", "-k", "cu12 and not release", "-rs", "--gpu", "require",
        "--harness-update", f"--junitxml={junit}",
    )
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    assert [c["cells"] for c in calls] == [["py310-cu12"], ["py311-cu12"], ["py312-cu12"], ["py313-cu12"]]
    assert {(c["gpu_policy"], c["update"], c["echo"]) for c in calls} == {("require", True, False)}
    result.stdout.fnmatch_lines([
        "*_ cell py311-cu12 _*",
        "cell py311-cu12: 1 failed, 6 passed, 1 skipped (exit code 1 of: python -m pytest tests)",
        "  FAILED tests/test_pointops.py::test_norm",
        "  the build is for another variant",
        "  log:   /cache/logs/py311-cu12/test.log",
        "  junit: /cache/reports/junit/py311-cu12.xml",
        "*_ cell py313-cu12 _*",
        "cell 'py313-cu12': build failed",
        "  hint: read the build log",
    ])
    result.stdout.fnmatch_lines(["SKIPPED * py312-cu12: no interpreter matches python 3.12.*"])
    assert "Traceback" not in result.stdout.str()

    cases = junit_cases(junit)
    assert set(cases) == {"py310-cu12", "py311-cu12", "py312-cu12", "py313-cu12"}
    assert properties(cases["py311-cu12"]) == [
        ("cell", "py311-cu12"), ("passed", "6"), ("failed", "1"), ("errors", "0"), ("skipped", "1"),
        ("failure", "tests/test_pointops.py::test_norm"),
        ("junit", "/cache/reports/junit/py311-cu12.xml"), ("log", "/cache/logs/py311-cu12/test.log"),
    ]
    assert ("passed", "7") in properties(cases["py310-cu12"])
    assert cases["py311-cu12"].find("failure") is not None
    assert cases["py310-cu12"].find("failure") is None


def test_failure_text_names_the_failing_tests_and_the_evidence() -> None:
    text = describe_failure(_outcome("c1", passed=2, failures=("a.py::t1", "a.py::t2")))
    assert text.splitlines() == [
        "cell c1: 2 failed, 2 passed, 1 skipped (exit code 1 of: python -m pytest tests)",
        "  FAILED a.py::t1",
        "  FAILED a.py::t2",
        "  log:   /cache/logs/c1/test.log",
        "  junit: /cache/reports/junit/c1.xml",
    ]


@pytest.mark.skipif(not HAS_GPU_POLICY, reason="harness.pipeline.run_cells takes no gpu_policy keyword yet")
def test_cupy_cells_skip_for_want_of_a_gpu_driver_without_solving(in_repo: pytest.Pytester) -> None:
    # cupy's channel is conda-forge, unreachable here: a solve would be an error, not a skip.
    result = in_repo.runpytest("matrices/cupy.toml", "-rs")
    result.assert_outcomes(skipped=10)
    result.stdout.fnmatch_lines(["SKIPPED * cupy-py310-cu12: needs a CUDA 12 driver*"])
    result.stdout.fnmatch_lines(["SKIPPED * cupy-py314-cu13: needs a CUDA 13 driver*"])
    required = in_repo.runpytest("matrices/cupy.toml", "-k", "py312-cu13", "--gpu", "require")
    required.assert_outcomes(failed=1)
    required.stdout.fnmatch_lines(["*needs a CUDA 13 driver*"])


# -- cells() and the harness_cell fixture -------------------------------------------------------


def test_cells_gives_one_param_per_cell_with_the_cell_ids() -> None:
    params = cells(CUPY)
    assert [p.id for p in params] == CUPY_IDS
    assert all(isinstance(p.values[0], Cell) for p in params)


def test_cells_finds_a_relative_matrix_from_the_calling_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "matrices").mkdir()
    (tmp_path / "matrices" / "m.toml").touch()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    module = tmp_path / "tests" / "unit" / "test_x.py"
    assert locate(Path("matrices/m.toml"), module) == tmp_path / "matrices" / "m.toml"
    assert locate(Path("matrices/none.toml"), module) == Path("matrices/none.toml")


def test_cells_of_a_broken_matrix_fail_the_module_with_the_message(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", bad=f'manifest = "{POINTOPS}"\nenvironment = "nope"\nname = "x"\n')
    pytester.makepyfile(test_mine="""
        import pytest
        from harness.pytest_plugin import cells

        @pytest.mark.parametrize("harness_cell", cells("bad.toml"), indirect=True)
        def test_it(harness_cell):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*bad.toml: environment: environment 'nope' is not defined*"])
    assert "Traceback" not in result.stdout.str()


def test_harness_cell_without_a_cell_says_how_to_parametrize(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_it(harness_cell):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*harness_cell needs a cell: parametrize it with*indirect=True*"])


@pytest.mark.skipif(not HAS_GPU_GATE, reason="no harness.gpu module (the runner's GPU gate) yet")
def test_harness_cell_skips_a_cell_this_runner_cannot_serve(in_repo: pytest.Pytester) -> None:
    in_repo.makepyfile(test_mine=f"""
        import pytest
        from harness.pytest_plugin import cells

        @pytest.mark.parametrize("harness_cell", cells({str(CUPY)!r}), indirect=True)
        def test_it(harness_cell):
            raise AssertionError("a GPU cell ran on a runner without a driver")
    """)
    result = in_repo.runpytest(str(in_repo.path / "test_mine.py"), "-k", "py312-cu13", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * cupy-py312-cu13: needs a CUDA 13 driver*"])


# -- real cells (solve, install, build, test) -----------------------------------------------------


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the real runs of this module: the offline channel is built once."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.mark.slow
def test_a_demo_cell_passes_and_junit_carries_its_results(
    in_repo: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, demo_cache: Path, tmp_path: Path
) -> None:
    needs_python("3.12")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(demo_cache))
    junit = tmp_path / "outer.xml"
    result = in_repo.runpytest_subprocess(
        "matrices/demo.toml", "-k", "py312-cu13 and not release", f"--junitxml={junit}", timeout=600
    )
    result.assert_outcomes(passed=1)
    (case,) = junit_cases(junit).values()
    props = dict(properties(case))
    assert props["cell"] == "py312-cu13"
    assert int(props["passed"]) >= 7 and props["failed"] == "0"
    inner = Path(props["junit"])
    assert inner.is_file() and inner.is_relative_to(demo_cache)
    assert junit_cases(inner)  # the cell's own JUnit, with its own test cases


@pytest.mark.slow
def test_two_demo_cells_run_on_two_workers(
    in_repo: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, demo_cache: Path
) -> None:
    needs_python("3.12", "3.13")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(demo_cache))
    result = in_repo.runpytest_subprocess(
        "matrices/demo.toml", "-k", "cu13 and (py312 or py313) and not release", "-n", "2", "-v",
        timeout=600,
    )
    result.assert_outcomes(passed=2)
    workers = {
        line.split("]")[0] + "]"
        for line in result.outlines
        if line.startswith("[gw") and "PASSED" in line
    }
    assert workers == {"[gw0]", "[gw1]"}, result.outlines


@pytest.mark.slow
def test_harness_cell_gives_the_activated_test_environment(
    in_repo: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, demo_cache: Path
) -> None:
    needs_python("3.12")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(demo_cache))
    in_repo.makepyfile(test_mine=f"""
        import subprocess
        import pytest
        from harness.pytest_plugin import cells

        @pytest.mark.parametrize("harness_cell", cells({str(DEMO)!r}), indirect=True)
        def test_the_build_imports_in_its_prefix(harness_cell):
            out = subprocess.run(
                ["python", "-c", "import sys, pointops; print(sys.prefix); print(pointops.__file__)"],
                env=dict(harness_cell.env), capture_output=True, text=True, check=True,
            )
            prefix, module = out.stdout.split()
            assert prefix == str(harness_cell.test_prefix)
            assert module.startswith(prefix)
    """)
    result = in_repo.runpytest_subprocess(
        str(in_repo.path / "test_mine.py"), "-k", "py312-cu13 and not release", timeout=600
    )
    result.assert_outcomes(passed=1)

