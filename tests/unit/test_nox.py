"""The nox front-end: one session per command, parametrized over the cells of matrix files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import MatrixError
from harness.nox import cell_tags, collect_cells, describe_cell, harness_argv, inner_command

REPO = Path(__file__).resolve().parents[2]

MANIFEST = """
[workspace]
channels = ["conda-forge"]
platforms = ["linux-64"]
preview = ["pixi-build"]
[workspace.build-variants]
python = ["3.11.*", "3.12.*"]
cuda-version = ["12.*", "13.*"]
[dependencies]
pkg = { path = "." }
[package]
name = "pkg"
version = "1.0"
[package.build]
backend = { name = "pixi-build-python", version = "*" }
[package.host-dependencies]
python = "*"
cuda-version = "*"
"""

# The shape of matrices/cupy.toml, smaller: 4 cells that need a GPU.
GPU_MATRIX = """
manifest = "../pixi.toml"
name = "py{python}-cu{cuda}"
gpu = "required"
[axes.python]
values = ["3.11", "3.12"]
dependencies = { python = "{value}.*" }
[axes.cuda]
values = ["12", "13"]
dependencies = { cuda-version = "{value}.*" }
system-requirements = { cuda = "{value}" }
"""

# Cells whose id does not carry the python version, and a GPU-optional one.
CPU_MATRIX = """
manifest = "../pixi.toml"
name = "cpu-{python}"
[axes.python]
values = ["3.11", "3.12"]
label = "v{label}"
dependencies = { python = "{value}.*", cuda-version = "12.*" }
"""

OPTIONAL_MATRIX = """
manifest = "../pixi.toml"
name = "opt-py{python}"
gpu = "optional"
profiles = ["release"]
[axes.python]
values = ["3.12"]
dependencies = { python = "{value}.*", cuda-version = "13.*" }
system-requirements = { cuda = "13" }
"""

NOXFILE = """
import nox

import harness.nox

nox.options.sessions = ["lint"]


@nox.session(venv_backend="none")
def lint(session):
    '''the project's own session'''


harness.nox.register_matrix_sessions({args})
"""


@pytest.fixture
def project(write: Callable[[str, str], Path]) -> Callable[..., Path]:
    """A temp project: pixi.toml, the given matrices/*.toml and a noxfile."""

    def make(matrices: dict[str, str], args: str = "") -> Path:
        write("pixi.toml", MANIFEST)
        for name, text in matrices.items():
            write(f"matrices/{name}", text)
        return write("noxfile.py", NOXFILE.format(args=args))

    return make


def nox(noxfile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(noxfile), *args],
        capture_output=True, text=True, cwd=noxfile.parent, timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )


def listed(noxfile: Path, *selection: str) -> list[dict]:
    """``nox -l --json``: the sessions the selection picks, with names, tags, descriptions."""
    done = nox(noxfile, "-l", "--json", *selection)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- the inner command ---------------------------------------------------------------------


def test_inner_command_passes_extra_arguments_to_test_only() -> None:
    assert inner_command("test", "m/a.toml", "py312-cu13", ["-k", "foo"], python="py") == [
        "py", "-m", "harness", "test", "--from", "m/a.toml", "py312-cu13", "--", "-k", "foo",
    ]
    assert inner_command("test", Path("a.toml"), "c", []) == [
        *harness_argv(), "test", "--from", "a.toml", "c",
    ]
    assert inner_command("build", "a.toml", "c", ["-k", "foo"], python="py") == [
        "py", "-m", "harness", "build", "--from", "a.toml", "c",
    ]


def test_sessions_start_the_installed_script_beside_the_interpreter(tmp_path: Path, monkeypatch) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    monkeypatch.setattr(sys, "executable", str(python))
    assert harness_argv() == [str(python), "-m", "harness"]  # no script: python -m harness
    script = python.parent / "harness"
    script.write_text("#!python\n")
    assert harness_argv() == [str(python), "-m", "harness"]  # not executable: not a command
    script.chmod(0o755)
    assert harness_argv() == [str(script)]
    assert harness_argv("py") == ["py", "-m", "harness"]  # another interpreter: its own module


# -- cells, tags, duplicates, broken files (in process: no nox) -----------------------------


def test_tags_carry_axes_profile_and_runner_class(project) -> None:
    root = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX, "c.toml": OPTIONAL_MATRIX}).parent
    collected = collect_cells([root])
    assert not collected.errors
    cells = {sc.cell.id: sc for sc in collected.cells}
    assert list(cells) == ["py311-cu12", "py311-cu13", "py312-cu12", "py312-cu13",
                           "cpu-v311", "cpu-v312", "opt-py312"]
    assert cells["py312-cu13"].source == root / "matrices" / "a.toml"
    assert cell_tags(cells["py312-cu13"].cell) == ["py312", "cu13", "dev", "gpu"]
    # py312 comes from the python variant when the id does not carry it; no CUDA, no cu tag
    assert cell_tags(cells["cpu-v312"].cell) == ["v312", "dev", "py312", "cpu"]
    tags = cell_tags(cells["opt-py312"].cell)
    assert "gpu" not in tags and {"gpu-optional", "cpu", "release", "cu13", "py312"} <= set(tags)
    assert describe_cell(cells["py312-cu13"].cell) == (
        "py312-cu13 (python 3.12.*, cuda-version 13.*; profile dev; needs a GPU (CUDA 13))"
    )


def test_duplicate_ids_keep_the_first_file_and_name_both(project) -> None:
    root = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX, "c.toml": GPU_MATRIX}).parent
    collected = collect_cells([root])
    assert [sc.source.name for sc in collected.cells] == ["a.toml"] * 4 + ["b.toml"] * 2
    [error] = collected.errors
    assert isinstance(error, MatrixError)
    assert error.file == root / "matrices" / "c.toml"
    assert "a.toml" in str(error) and "c.toml" in str(error) and "'py311-cu12'" in str(error)
    assert collected.skipped == (root / "matrices" / "c.toml",)


def test_a_broken_file_is_reported_and_the_others_still_count(project, write) -> None:
    root = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX}).parent
    write("matrices/a.toml", GPU_MATRIX.replace('gpu = "required"', 'gpu = "sometimes"'))
    missing = root / "nowhere.toml"
    collected = collect_cells([root / "matrices" / "a.toml", root / "matrices" / "b.toml", missing])
    assert [sc.cell.id for sc in collected.cells] == ["cpu-v311", "cpu-v312"]
    assert collected.skipped == (root / "matrices" / "a.toml", missing)
    assert "unknown GPU policy" in str(collected.errors[0])


# -- through nox ----------------------------------------------------------------------------


def test_nox_lists_one_session_per_command_and_cell(project) -> None:
    noxfile = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX})
    text = nox(noxfile, "-l")
    assert text.returncode == 0, text.stderr
    # the matrix sessions are not default ones: a bare `nox` still runs only `lint`
    assert "* lint -> the project's own session" in text.stdout
    assert "- test(py312-cu13) [py312,cu13,dev,gpu] -> build, install and test one cell of " \
           "matrices/a.toml, matrices/b.toml" in text.stdout
    assert "- solve(cpu-v311) -> solve and install the prefixes of one cell" in text.stdout
    sessions = listed(noxfile, "-s", "test", "build", "solve")
    ids = ["py311-cu12", "py311-cu13", "py312-cu12", "py312-cu13", "cpu-v311", "cpu-v312"]
    assert [s["session"] for s in sessions] == [f"{c}({i})" for c in ("test", "build", "solve") for i in ids]
    assert {s["call_spec"]["cell"] for s in sessions} == set(ids)


def test_nox_tags_select_test_sessions(project) -> None:
    noxfile = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX})
    assert [s["session"] for s in listed(noxfile, "-t", "py312")] == [
        "test(py312-cu12)", "test(py312-cu13)", "test(cpu-v312)",
    ]
    assert [s["session"] for s in listed(noxfile, "-t", "gpu")] == [
        "test(py311-cu12)", "test(py311-cu13)", "test(py312-cu12)", "test(py312-cu13)",
    ]
    assert [s["session"] for s in listed(noxfile, "-k", "build and cu13")] == [
        "build(py311-cu13)", "build(py312-cu13)",
    ]


def test_nox_reports_a_broken_or_clashing_matrix_and_keeps_the_rest(project, write) -> None:
    noxfile = project({"a.toml": GPU_MATRIX, "b.toml": CPU_MATRIX, "c.toml": GPU_MATRIX})
    write("matrices/b.toml", "manifest = [")
    done = nox(noxfile, "-l")
    assert done.returncode == 0
    assert "Traceback" not in done.stderr
    assert "matrices/b.toml" in done.stderr and "no nox sessions for matrices/b.toml" in done.stderr
    assert "cell 'py311-cu12' is defined by both" in done.stderr
    assert "no nox sessions for matrices/c.toml" in done.stderr
    assert "* lint" in done.stdout and "test(py312-cu13)" in done.stdout
    assert "cpu-v311" not in done.stdout


def test_nox_session_runs_the_inner_command_with_posargs(project, tmp_path: Path) -> None:
    """The session body, end to end, with a stand-in interpreter that records its argv."""
    record = tmp_path / "argv.json"
    fake = tmp_path / "fakepython"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(record)!r}, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    noxfile = project({"a.toml": GPU_MATRIX}, args=f"python={str(fake)!r}")
    done = nox(noxfile, "-s", "test(py312-cu13)", "solve(py311-cu12)", "--", "-k", "x y")
    assert done.returncode == 0, done.stderr
    matrix = str(noxfile.parent / "matrices" / "a.toml")
    assert [json.loads(line) for line in record.read_text().splitlines()] == [
        ["-m", "harness", "test", "--from", matrix, "py312-cu13", "--", "-k", "x y"],
        ["-m", "harness", "solve", "--from", matrix, "py311-cu12"],
    ]
    assert "solve takes no extra arguments" in done.stderr


def test_the_repository_noxfile_keeps_its_sessions_and_lists_the_matrix() -> None:
    done = nox(REPO / "noxfile.py", "-l")
    assert done.returncode == 0, done.stderr
    assert "* tests ->" in done.stdout and "* lint ->" in done.stdout
    assert "- test(py312-cu13) [" in done.stdout
    # every matrix file of the repository compiles and no two of them share a cell id
    assert "harness:" not in done.stderr
