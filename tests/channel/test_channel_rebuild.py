"""Small channels (one python, no downloads): rebuilds, errors, locking, atomicity, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.channel import STAMP_NAME, PythonInfo, build_offline_channel, channel_main
from harness.errors import ChannelError


def _small(root: Path, py: PythonInfo, **kw: Any) -> Any:
    return build_offline_channel(
        root, pythons=[py.executable], discover=False, requirements=(), **kw
    )


def _index(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive, "r:bz2") as tf:
        fh = tf.extractfile("info/index.json")
        assert fh is not None
        return json.loads(fh.read())


def _link(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive, "r:bz2") as tf:
        fh = tf.extractfile("info/link.json")
        assert fh is not None
        return json.loads(fh.read())


def test_small_channel_has_exactly_python_abi_and_cuda(
    tmp_path: Path, a_python: PythonInfo
) -> None:
    ch = _small(tmp_path / "ch", a_python)
    assert ch.rebuilt and [p.version for p in ch.pythons] == [a_python.version]
    assert len(ch.packages) == 2 + 13
    assert (ch.path / STAMP_NAME).is_file()
    assert oct((ch.path).stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    assert not list(tmp_path.glob(".ch.*")), "temporary build directories were left behind"


def test_changed_input_rebuilds_and_reuses_unchanged_archives(
    tmp_path: Path, a_python: PythonInfo, make_wheel: Callable[..., Path]
) -> None:
    root = tmp_path / "ch"
    first = _small(root, a_python)
    py_archive = next((root / first.subdir).glob("python-*.tar.bz2"))
    inode = py_archive.stat().st_ino
    wheel = make_wheel(
        "hello-tool",
        "0.3",
        console_scripts={"hello-tool": "hello_tool:main"},
        modules={"hello_tool/__init__.py": "def main():\n    print('hello from the channel')\n"},
    )
    second = _small(root, a_python, wheels=[wheel])
    assert second.rebuilt and second.input_hash != first.input_hash
    added = set(second.packages) - set(first.packages)
    assert len(added) == 1 and next(iter(added)).startswith("hello-tool-0.3-pyh")
    # The python archive was hard-linked from the previous channel, not rewritten.
    assert next((root / second.subdir).glob("python-*.tar.bz2")).stat().st_ino == inode
    third = _small(root, a_python, wheels=[wheel])
    assert third.rebuilt is False and third.input_hash == second.input_hash
    # force=True rebuilds even though nothing changed.
    assert _small(root, a_python, wheels=[wheel], force=True).rebuilt is True


def test_explicit_wheel_converts_to_a_working_noarch_package(
    tmp_path: Path,
    a_python: PythonInfo,
    make_wheel: Callable[..., Path],
    solve_install: Callable[..., tuple[Path, list[Any]]],
) -> None:
    wheel = make_wheel(
        "Hello_Tool",
        "0.3",
        requires_python=">=3.8",
        requires=['colorama; sys_platform == "win32"', 'pytest; extra == "test"'],
        console_scripts={"hello-tool": "hello_tool:main"},
        modules={"hello_tool/__init__.py": "def main():\n    print('hello from the channel')\n"},
    )
    ch = _small(tmp_path / "ch", a_python, wheels=[wheel])
    archive = next((ch.path / "noarch").glob("hello-tool-*.tar.bz2"))
    index = _index(archive)
    assert index["noarch"] == "python" and index["depends"] == ["python >=3.8"]
    assert index["build_number"] == 1  # explicit wheels win ties in the solver
    assert _link(archive)["noarch"]["entry_points"] == ["hello-tool = hello_tool:main"]

    prefix, _ = solve_install(ch.path, [f"python {a_python.minor}.*", "hello-tool"])
    site = prefix / f"lib/python{a_python.minor}/site-packages"
    assert (site / "hello_tool/__init__.py").is_file()
    assert (site / "Hello_Tool-0.3.dist-info/INSTALLER").read_text() == "conda\n"
    out = subprocess.run(
        [str(prefix / "bin/hello-tool")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "hello from the channel", out.stderr


def test_non_pure_wheel_is_refused_before_anything_is_built(
    tmp_path: Path, a_python: PythonInfo, make_wheel: Callable[..., Path]
) -> None:
    wheel = make_wheel("native", tag="cp312-cp312-manylinux_2_17_x86_64")
    with pytest.raises(ChannelError, match="not a pure-Python wheel") as err:
        _small(tmp_path / "ch", a_python, wheels=[wheel])
    assert "hint:" in str(err.value)
    assert not (tmp_path / "ch").exists()


def test_bad_explicit_inputs_are_channel_errors(tmp_path: Path, a_python: PythonInfo) -> None:
    with pytest.raises(ChannelError, match="does not exist"):
        build_offline_channel(tmp_path / "ch", pythons=[tmp_path / "python3.99"], discover=False)
    with pytest.raises(ChannelError, match="wheel not found"):
        _small(tmp_path / "ch", a_python, wheels=[tmp_path / "nope-1.0-py3-none-any.whl"])
    old = Path.home() / ".pyenv/versions/2.7.18/bin/python2.7"
    if old.exists():
        with pytest.raises(ChannelError, match=r"CPython >= 3\.8 is required"):
            build_offline_channel(tmp_path / "ch", pythons=[old], discover=False, requirements=())
    with pytest.raises(ChannelError, match="no usable CPython"):
        build_offline_channel(tmp_path / "ch", discover=False, requirements=())


_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from harness.channel import build_offline_channel
    root, exe, wheel, mode = sys.argv[1:5]
    def progress(msg):
        if mode == "slow":
            time.sleep(0.05)  # widen the window in which both processes are busy
        if mode == "die" and msg == "indexing":
            os._exit(9)       # a build killed half-way
    ch = build_offline_channel(Path(root), pythons=[Path(exe)], discover=False,
                               requirements=(), wheels=[Path(wheel)] if wheel else [],
                               progress=progress)
    print(json.dumps({"rebuilt": ch.rebuilt, "hash": ch.input_hash, "n": len(ch.packages)}))
    sys.stdout.flush()
    os._exit(0)
    """
)


def _child(root: Path, py: PythonInfo, wheel: Path | None, mode: str) -> subprocess.Popen[str]:
    args: Sequence[str] = [
        sys.executable,
        "-c",
        _CHILD,
        str(root),
        str(py.executable),
        str(wheel or ""),
        mode,
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_building_at_once_make_one_channel(
    tmp_path: Path, a_python: PythonInfo
) -> None:
    root = tmp_path / "ch"
    procs = [_child(root, a_python, None, "slow") for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["rebuilt"] for r in results) == [False, True]
    assert results[0]["hash"] == results[1]["hash"] and results[0]["n"] == results[1]["n"] == 15
    stamp = json.loads((root / STAMP_NAME).read_text())
    assert stamp["input_hash"] == results[0]["hash"]
    assert all((root / e["file"]).is_file() for e in stamp["packages"])
    assert not list(tmp_path.glob(".ch.*")), "temporary build directories were left behind"


def test_killed_build_never_leaves_a_channel_that_looks_complete(
    tmp_path: Path, a_python: PythonInfo, make_wheel: Callable[..., Path]
) -> None:
    root = tmp_path / "ch"
    # First build killed: no channel at all.
    proc = _child(root, a_python, None, "die")
    proc.communicate(timeout=120)
    assert proc.returncode == 9
    assert not root.exists()
    assert list(tmp_path.glob(".ch.tmp-*")), "the killed build should have left its scratch dir"
    # A good build cleans that up.
    good = _small(root, a_python)
    assert good.rebuilt and not list(tmp_path.glob(".ch.tmp-*"))
    # A killed rebuild (new wheel) leaves the previous channel untouched.
    wheel = make_wheel("extra-pkg", "1.0")
    proc = _child(root, a_python, wheel, "die")
    proc.communicate(timeout=120)
    assert proc.returncode == 9
    stamp = json.loads((root / STAMP_NAME).read_text())
    assert stamp["input_hash"] == good.input_hash
    assert not list((root / "noarch").glob("extra-pkg-*"))
    # ...and the next run completes the rebuild.
    again = _small(root, a_python, wheels=[wheel])
    assert again.rebuilt and any(p.startswith("extra-pkg-1.0-") for p in again.packages)


def test_cli_builds_and_reports(
    tmp_path: Path, a_python: PythonInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--root", str(tmp_path / "ch"), "--python", str(a_python.executable)]
    argv += ["--no-discover", "--no-requirements", "-q"]
    assert channel_main(argv) == 0
    out = capsys.readouterr().out
    assert "offline channel built" in out and a_python.version in out and "cuda-version (13)" in out
    assert channel_main(argv) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_errors_are_messages_not_tracebacks(
    tmp_path: Path,
    a_python: PythonInfo,
    make_wheel: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    wheel = make_wheel("native", tag="cp312-cp312-linux_x86_64")
    argv = [
        "--root",
        str(tmp_path / "ch"),
        "--python",
        str(a_python.executable),
        "--no-discover",
        "-q",
    ]
    assert channel_main([*argv, "--no-requirements", "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a pure-Python wheel" in err and "Traceback" not in err
    assert channel_main([*argv, "--requirement", "pytest >>> 8"]) == 2
    assert "invalid requirement" in capsys.readouterr().err
    assert channel_main(["--no-such-option"]) == 2


def test_a_foreign_directory_is_never_replaced(tmp_path: Path, a_python: PythonInfo) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "precious.txt").write_text("do not delete\n")
    with pytest.raises(ChannelError, match="is not an offline channel"):
        _small(root, a_python)
    assert (root / "precious.txt").read_text() == "do not delete\n"


def test_registered_provider_resolves_the_offline_name(
    tmp_path: Path, a_python: PythonInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.channel import register_offline_channel
    from harness.channels import resolve_channel, unregister_named_channel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    small = {"pythons": [a_python.executable], "discover": False, "requirements": ()}
    register_offline_channel(**small)  # root: $HARNESS_CACHE_DIR/channels/offline, lazily
    try:
        assert not (tmp_path / "cache").exists()  # registering builds nothing
        resolved = resolve_channel("offline", tmp_path)
    finally:
        unregister_named_channel("offline")
    root = tmp_path / "cache" / "channels" / "offline"
    assert resolved.url == root.as_uri()
    assert (root / STAMP_NAME).is_file() and (root / "noarch" / "repodata.json").is_file()
