"""``harness ci github``: the job matrix a workflow fans out over, and the workflow that does it."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.ci import (
    cell_command,
    display_path,
    dump,
    github_entries,
    github_matrix,
    needs_gpu,
    plain_version,
    runner_labels,
)
from harness.cli import run
from harness.loader import compile_path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "matrix.yml"
KEYS = {"id", "runs-on", "python", "cuda", "profile", "gpu", "matrix", "command"}
GPU_LABELS = ["linux-amd64-gpu-l4-latest-1"]


def export(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    code = run(["ci", "github", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(out.strip().splitlines()) == 1, "one line, for $GITHUB_OUTPUT"
    data = json.loads(out)
    assert set(data) == {"include"}
    return data["include"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def test_cupy_cells_need_a_gpu_and_get_the_matrix_gpu_labels(capsys: pytest.CaptureFixture[str]) -> None:
    include = export(capsys, "matrices/cupy.toml")
    assert len(include) == 10
    assert all(set(e) == KEYS for e in include)
    assert [e["id"] for e in include] == [
        f"cupy-py{py.replace('.', '')}-cu{cu}"
        for py in ("3.10", "3.11", "3.12", "3.13", "3.14")
        for cu in ("12", "13")
    ]
    for e in include:
        assert e["runs-on"] == GPU_LABELS
        assert e["gpu"] == "required"
        assert e["profile"] == "dev"
        assert e["matrix"] == "matrices/cupy.toml"
        assert e["command"] == f"harness test --from matrices/cupy.toml {e['id']}"
        _, py, cu = e["id"].split("-")
        assert e["python"] == f"{py[2]}.{py[3:]}"  # py312 -> "3.12"
        assert e["cuda"] == cu[2:]


def test_demo_cells_are_gpu_optional_and_get_the_default_labels(capsys: pytest.CaptureFixture[str]) -> None:
    include = export(capsys, "matrices/demo.toml")
    assert len(include) == 16
    # demo.toml lists GPU labels too, but its cells run anywhere: no GPU runner is spent on them.
    assert all(e["runs-on"] == ["ubuntu-latest"] for e in include)
    cells = compile_path(REPO / "matrices" / "demo.toml").cells
    assert {e["gpu"] for e in include} == {"optional"}
    assert [e["id"] for e in include] == [c.id for c in cells]
    by_id = {e["id"]: e for e in include}
    assert by_id["py312-cu13"]["python"] == "3.12"
    assert by_id["py312-cu13"]["cuda"] == "13"
    assert by_id["py312-cu13"]["profile"] == "dev"
    assert by_id["py310-cu12-release"]["profile"] == "release"
    assert by_id["py310-cu12-release"]["python"] == "3.10"


def test_default_sources_split_by_gpu_need_and_export_identically_twice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    everything = export(capsys)
    assert len(everything) == 26
    assert run(["ci", "github"]) == 0
    again = json.loads(capsys.readouterr().out)["include"]
    assert again == everything
    gpu = export(capsys, "--gpu-only")
    cpu = export(capsys, "--cpu-only")
    assert {e["id"] for e in gpu} == {e["id"] for e in everything if e["id"].startswith("cupy-")}
    assert len(cpu) == 16 and all(e["gpu"] != "required" for e in cpu)
    assert [e["id"] for e in gpu + cpu] == [e["id"] for e in everything]


def test_command_prefix_and_labels_without_a_runners_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    include = export(capsys, "matrices/demo.toml", "--command-prefix", "./dev harness")
    assert include[0]["command"] == f"./dev harness test --from matrices/demo.toml {include[0]['id']}"

    matrix = tmp_path / "plain matrices" / "gpu.toml"
    matrix.parent.mkdir()
    matrix.write_text(
        f'manifest = "{(REPO / "examples" / "cupy" / "pixi.toml").as_posix()}"\n'
        'name = "c{cuda}"\ngpu = "required"\n'
        '[axes.cuda]\nvalues = ["13"]\n'
        'dependencies = { cuda-version = "{value}.*" }\n'
        'system-requirements = { cuda = "{value}" }\n'
        '[axes.python]\nvalues = ["3.12"]\ndependencies = { python = "{value}.*" }\n'
    )
    (entry,) = export(capsys, str(matrix))
    assert entry["runs-on"] == ["ubuntu-latest"]
    assert entry["gpu"] == "required" and entry["cuda"] == "13"
    # Outside the current directory: an absolute path, quoted for the shell.
    assert entry["matrix"] == matrix.resolve().as_posix()
    assert shlex.split(entry["command"]) == ["harness", "test", "--from", entry["matrix"], "c13"]


def test_helpers() -> None:
    assert plain_version("3.12.*") == "3.12"
    assert plain_version(">=3.10") == ">=3.10"
    assert plain_version(None) is None
    (gpu_cell,) = [c for c in compile_path(REPO / "matrices" / "cupy.toml").cells
                   if c.id == "cupy-py312-cu13"]
    assert needs_gpu(gpu_cell)
    assert not needs_gpu(dataclasses.replace(gpu_cell, gpu="optional"))
    assert not needs_gpu(dataclasses.replace(gpu_cell, cuda=None))
    assert runner_labels(dataclasses.replace(gpu_cell, runners=())) == ("ubuntu-latest",)
    assert cell_command("harness", "my dir/m.toml", "a") == "harness test --from 'my dir/m.toml' a"
    assert display_path(REPO / "matrices" / "demo.toml", REPO) == "matrices/demo.toml"
    assert github_entries([], root=REPO) == []


def test_the_exported_command_runs_the_cell_and_fails_a_gpu_cell_under_require(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The workflow's own step, on this GPU-less machine: skipped by default, failed with
    ``--gpu require`` (decided before any solve, so conda-forge is never asked)."""
    prefix = f"{shlex.quote(sys.executable)} -m harness"
    (entry,) = [e for e in export(capsys, "matrices/cupy.toml", "--command-prefix", prefix)
                if e["id"] == "cupy-py312-cu13"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CONDA_OVERRIDE"))}
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    step = _workflow()["jobs"]["cell"]["steps"]
    script = next(s["run"] for s in step if "CELL_COMMAND" in s.get("run", ""))
    for gpu, expected in (("optional", 0), ("required", 1)):
        out = subprocess.run(
            ["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**env, "CELL_COMMAND": entry["command"], "CELL_GPU": gpu},
        )
        assert out.returncode == expected, out.stdout + out.stderr
        assert "needs a CUDA 13 driver" in out.stdout


# --- the workflow ----------------------------------------------------------------------------


def test_workflow_fans_out_over_the_plan_output() -> None:
    wf = _workflow()
    triggers = wf.get("on", wf.get(True))  # PyYAML reads a bare `on` as YAML 1.1's true
    assert "pull_request" in triggers
    plan, cell = wf["jobs"]["plan"], wf["jobs"]["cell"]

    step = next(s for s in plan["steps"] if "harness ci github" in s.get("run", ""))
    assert 'echo "matrix=' in step["run"] and "$GITHUB_OUTPUT" in step["run"]
    assert plan["outputs"]["matrix"] == "${{ steps." + step["id"] + ".outputs.matrix }}"

    assert cell["needs"] == "plan"
    assert cell["strategy"]["fail-fast"] is False
    assert cell["strategy"]["matrix"] == "${{ fromJson(needs.plan.outputs.matrix) }}"
    assert cell["runs-on"] == "${{ matrix.runs-on }}"
    # The guard against an empty matrix compares with exactly what the export prints.
    assert f"'{dump(github_matrix([]))}'" in cell["if"]

    run_step = next(s for s in cell["steps"] if "CELL_COMMAND" in s.get("run", ""))
    assert run_step["env"] == {"CELL_COMMAND": "${{ matrix.command }}", "CELL_GPU": "${{ matrix.gpu }}"}
    assert "--gpu require" in run_step["run"]
    upload = next(s for s in cell["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert ".harness/reports/" in upload["with"]["path"].split()
    assert cell["env"]["HARNESS_CACHE_DIR"] == "${{ github.workspace }}/.harness"


def _workflow() -> dict[Any, Any]:
    text = WORKFLOW.read_text()
    try:
        import yaml
    except ImportError:
        return parse_yaml(text)
    return yaml.safe_load(text)


def test_the_fallback_yaml_reader_reads_what_the_workflow_uses() -> None:
    text = (
        "# c\non:\n  push:\n    branches: [main, 'x y']\n  pull_request:\n"
        "a:\n  - uses: x@v1\n    with:\n      k: \"3.12\"\n  - run: |\n      one\n\n      two # not a comment\n"
        "  - 7\nb: false  # comment\nc: '{\"include\":[]}'\n"
    )
    assert parse_yaml(text) == {
        "on": {"push": {"branches": ["main", "x y"]}, "pull_request": None},
        "a": [{"uses": "x@v1", "with": {"k": "3.12"}}, {"run": "one\n\ntwo # not a comment\n"}, 7],
        "b": False,
        "c": '{"include":[]}',
    }


# --- a YAML reader for the subset a workflow file uses (PyYAML is not a dependency) --------


def parse_yaml(text: str) -> Any:
    """Block mappings and sequences, ``|`` scalars, flow lists, quoted and plain scalars."""
    lines = text.splitlines()
    value, _ = _block(lines, _next(lines, 0), -1)
    return value


def _next(lines: list[str], i: int) -> int:
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    return i


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], i: int, parent: int) -> tuple[Any, int]:
    if i >= len(lines) or _indent(lines[i]) <= parent:
        return None, i
    ind = _indent(lines[i])
    if lines[i].strip() == "-" or lines[i].strip().startswith("- "):
        return _sequence(lines, i, ind)
    return _mapping(lines, i, ind)


def _sequence(lines: list[str], i: int, ind: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and _indent(lines[i]) == ind and lines[i].strip().startswith("-"):
        rest = lines[i].strip()[1:].strip()
        if not rest:
            value, i = _block(lines, _next(lines, i + 1), ind)
        elif _is_key(rest):
            lines[i] = " " * (ind + 2) + rest  # "- k: v" opens a mapping two columns in
            value, i = _mapping(lines, i, ind + 2)
        else:
            value, i = _scalar(rest), i + 1
        out.append(value)
        i = _next(lines, i)
    return out, i


def _is_key(text: str) -> bool:
    return not text.startswith(("'", '"', "[", "{")) and (": " in text or text.endswith(":"))


def _mapping(lines: list[str], i: int, ind: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and _indent(lines[i]) == ind:
        key, _, rest = lines[i].strip().partition(":")
        rest = rest.strip()
        if rest in ("|", "|-"):
            i, body = i + 1, []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > ind):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            cut = min(_indent(b) for b in body if b.strip())
            value: Any = "\n".join(b[cut:] for b in body) + ("" if rest == "|-" else "\n")
        elif rest and not rest.startswith("#"):
            value, i = _scalar(rest), i + 1
        else:
            value, i = _block(lines, _next(lines, i + 1), ind)
        out[key.strip().strip("'\"")] = value
        i = _next(lines, i)
    return out, i


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("'"):
        end = text.index("'", 1)
        return text[1:end]
    if text.startswith('"'):
        return json.loads(text[: text.index('"', 1) + 1])
    if " #" in text:
        text = text[: text.index(" #")].strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(p) for p in text[1:-1].split(",") if p.strip()]
    words = {"true": True, "false": False, "null": None, "~": None, "": None}
    if text in words:
        return words[text]
    return int(text) if text.isdigit() else text
