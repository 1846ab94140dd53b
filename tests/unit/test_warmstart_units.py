"""The warm start's lean replacements (expansion, quoting, spawning, its snapshot) behave as what they replace."""

from __future__ import annotations

import marshal
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import launch, warmstart

# The expansion as it was written with `re`: the lean scanner must agree with it everywhere.
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|%([A-Za-z_][A-Za-z0-9_]*)%")


def expand_with_re(value: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name:
            return env.get(name, "")
        return env.get(match.group(3), match.group(0))

    return _VAR.sub(sub, value)


pieces = st.sampled_from(["$", "{", "}", "%", "A", "b_", "9", "PATH", "X1", " ", "/", "é", "$$", "%%", "${"])
texts = st.lists(pieces, max_size=14).map("".join) | st.text(max_size=20)
envs = st.dictionaries(st.sampled_from(["A", "b_", "PATH", "X1", "Ab_"]), st.text(max_size=5), max_size=4)


@settings(max_examples=400, deadline=None)
@given(value=texts, env=envs)
def test_expand_agrees_with_the_regular_expression(value: str, env: dict[str, str]) -> None:
    assert launch.expand(value, env) == expand_with_re(value, env)


@settings(max_examples=300, deadline=None)
@given(word=st.text(max_size=12) | st.lists(pieces, max_size=8).map("".join))
def test_quote_agrees_with_shlex(word: str) -> None:
    assert launch.quote(word) == shlex.quote(word)


@settings(max_examples=300, deadline=None)
@given(command=st.lists(st.sampled_from(["A=1", "A", "=", "1A=x", "_b=", "pytest", " ", "-q", "a-b=c"]),
                        min_size=1, max_size=4).map(" ".join))
def test_a_leading_assignment_needs_a_shell(command: str) -> None:
    words = shlex.split(command)
    expected = bool(words) and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]) is not None
    assert launch.needs_shell(command) == expected


def run_spawned(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path) -> tuple[int, bytes]:
    child = launch.spawn(argv, env=os.environ if env is None else env, cwd=str(cwd))
    try:
        output = child.stdout.read()
    finally:
        child.stdout.close()
    return child.wait(), output


def test_spawn_runs_in_the_directory_and_collects_both_streams(tmp_path: Path) -> None:
    here = os.getcwd()
    code, out = run_spawned(
        [sys.executable, "-c", "import os, sys; print(os.getcwd()); print('err', file=sys.stderr); sys.exit(3)"],
        cwd=tmp_path,
    )
    assert code == 3
    assert out.decode().split() == [str(tmp_path), "err"]
    assert os.getcwd() == here  # the caller's directory is back


def test_spawn_finds_the_program_on_the_childs_path(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "only-here"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho found \"$@\"\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}/usr/bin:/bin"}
    assert run_spawned(["only-here", "x"], env=env, cwd=tmp_path) == (0, b"found x\n")
    with pytest.raises(FileNotFoundError):
        launch.spawn(["only-here"], env=dict(os.environ), cwd=str(tmp_path))  # not on this PATH


def ignored_signals(status: str) -> int:
    line = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return int(line.split()[1], 16)


def test_spawn_restores_the_signals_python_ignores(tmp_path: Path) -> None:
    sigpipe = 1 << (signal.SIGPIPE - 1)
    assert ignored_signals(Path("/proc/self/status").read_text()) & sigpipe  # this interpreter ignores it...
    code, out = run_spawned(["cat", "/proc/self/status"], cwd=tmp_path)
    assert code == 0 and not ignored_signals(out.decode()) & sigpipe  # ...and its child must not


def test_spawn_passes_no_descriptor_but_the_standard_three(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as a parent process might hand us one
    inode = os.fstat(write_end).st_ino
    probe = (
        "import os\n"
        "try:\n"
        f"    print('leaked' if os.fstat({write_end}).st_ino == {inode} else 'closed')\n"
        "except OSError:\n"
        "    print('closed')\n"
    )
    try:
        code, out = run_spawned([sys.executable, "-c", probe], cwd=tmp_path)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (code, out.decode().split()) == (0, ["closed"])


def test_spawn_reports_signals_as_popen_does(tmp_path: Path) -> None:
    child = launch.spawn([sys.executable, "-c", "import time; time.sleep(30)"], env=dict(os.environ), cwd=str(tmp_path))
    assert child.poll() is None
    child.terminate()
    assert child.wait() == -signal.SIGTERM
    child.stdout.close()
    with pytest.raises(subprocess.TimeoutExpired):
        slow = launch.spawn([sys.executable, "-c", "import time; time.sleep(30)"], env=dict(os.environ), cwd=str(tmp_path))
        try:
            slow.wait(timeout=0.05)
        finally:
            slow.kill()
            assert slow.wait() == -signal.SIGKILL
            slow.stdout.close()


def test_a_snapshot_is_read_only_for_its_own_invocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warmstart.INDEX_ENV, str(tmp_path))
    text = warmstart.material(["m.toml"], ["py312-*"], "skip")
    path = Path(warmstart.snapshot_path(text))
    snapshot = {"format": warmstart.FORMAT, "python": warmstart.PYTHON, "material": text,
                "taken_ns": 0, "inputs": {}, "cells": []}
    path.write_bytes(marshal.dumps(snapshot))
    assert warmstart.read_snapshot(text) == snapshot
    for field, value in (("python", "cpython-0-0"), ("format", 0), ("material", text + "x")):
        path.write_bytes(marshal.dumps({**snapshot, field: value}))
        assert warmstart.read_snapshot(text) is None, field
    for garbage in (b"", b"\x00garbage", marshal.dumps([1, 2])):
        path.write_bytes(garbage)
        assert warmstart.read_snapshot(text) is None


def test_a_snapshot_without_cells_never_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warmstart.INDEX_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    text = warmstart.material([], ["c"], "skip")
    Path(warmstart.snapshot_path(text)).write_bytes(marshal.dumps(
        {"format": warmstart.FORMAT, "python": warmstart.PYTHON, "material": text,
         "taken_ns": 0, "inputs": {}, "cells": []}))
    assert warmstart.try_warm(["test", "c"]) is None
    Path(warmstart.snapshot_path(text)).write_bytes(marshal.dumps(
        {"format": warmstart.FORMAT, "python": warmstart.PYTHON, "material": text,
         "taken_ns": 0, "inputs": {}, "cells": [{"lock": str(tmp_path / "l")}]}))
    assert warmstart.try_warm(["test", "c"]) is None  # a cell it cannot read: the full path


def test_the_index_is_the_warm_dir_else_in_the_cache_dir_else_in_the_users_cache(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path / "home")}
    assert warmstart.index_dir(home) == str(tmp_path / "home/.cache/variant-harness/warm")
    xdg = {**home, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert warmstart.index_dir(xdg) == str(tmp_path / "xdg/variant-harness/warm")
    cache = {**xdg, "HARNESS_CACHE_DIR": str(tmp_path / "root")}
    assert warmstart.index_dir(cache) == str(tmp_path / "root/warm/index")
    assert warmstart.index_dir({**cache, warmstart.INDEX_ENV: str(tmp_path / "w")}) == str(tmp_path / "w")
