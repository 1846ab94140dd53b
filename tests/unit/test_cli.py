"""The CLI as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def harness(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_list_json_has_the_documented_fields() -> None:
    out = harness("list", "matrices/cupy.toml", "--json")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert len(cells) == 10
    for cell in cells:
        assert {"id", "environment", "profile", "platform", "variant", "virtual_packages", "gpu", "tags"} <= set(cell)
        assert isinstance(cell["variant"], dict) and isinstance(cell["virtual_packages"], list)
    one = next(c for c in cells if c["id"] == "cupy-py312-cu13")
    assert one["variant"] == {"cuda-version": "13.*", "python": "3.12.*"}
    assert "__cuda=13" in one["virtual_packages"]


def test_list_table_shows_one_line_per_cell() -> None:
    out = harness("list", "matrices/cupy.toml")
    assert out.returncode == 0
    assert sum(1 for line in out.stdout.splitlines() if line.startswith("cupy-py3")) == 10


def test_show_says_where_values_came_from() -> None:
    out = harness("show", "cupy-py312-cu13", "matrices/cupy.toml")
    assert out.returncode == 0, out.stderr
    assert "<- axis python=3.12" in out.stdout
    assert "<- workspace.build-variants" in out.stdout
    assert "__cuda=13" in out.stdout


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[workspace]\nchannels = []\nplatforms = ['linux-64']\n[environments]\ne = ['nope']\n", "environments.e"),
        ("[workspace\n", "invalid TOML"),
        ("[workspace]\nplatforms = ['linux-64']\n", "missing field 'channels'"),
    ],
)
def test_user_errors_exit_2_without_traceback(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "pixi.toml").write_text(text)
    out = harness("list", str(tmp_path / "pixi.toml"))
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "pixi.toml") in out.stderr


def test_unknown_cell_suggests_a_close_one() -> None:
    out = harness("show", "cupy-py312-cu31", "matrices/cupy.toml")
    assert out.returncode == 2
    assert "cupy-py312-cu13" in out.stderr
