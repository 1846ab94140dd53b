"""The full default channel: solve, install and run against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.channel import (
    CUDA_VERSIONS,
    OfflineChannel,
    PythonInfo,
    build_offline_channel,
    find_python,
)
from harness.channel.wheelhouse import default_wheelhouse


def _repodata(channel: OfflineChannel, subdir: str) -> dict[str, dict[str, Any]]:
    data = json.loads((channel.path / subdir / "repodata.json").read_text())
    return {**data.get("packages", {}), **data.get("packages.conda", {})}


def _need(channel: OfflineChannel, spec: str) -> PythonInfo:
    match = find_python(channel, spec)
    if match.python is None:
        pytest.skip(match.reason or "no python")
    return match.python


def _run(cmd: Sequence[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, env=env, **kw
    )


def test_channel_holds_pythons_cuda_and_pytest(offline_channel: OfflineChannel) -> None:
    assert offline_channel.pythons, "discovery found no interpreter"
    assert offline_channel.url == offline_channel.path.as_uri()
    arch = _repodata(offline_channel, offline_channel.subdir)
    noarch = _repodata(offline_channel, "noarch")
    pythons = {r["version"]: r for r in arch.values() if r["name"] == "python"}
    assert sorted(pythons) == sorted(p.version for p in offline_channel.pythons)
    for py in offline_channel.pythons:
        cp = "cp" + py.minor.replace(".", "")
        assert pythons[py.version]["depends"] == [f"python_abi {py.minor}.* *_{cp}"]
        assert pythons[py.version]["build"] == "pyenv_0"
        assert any(
            r["name"] == "python_abi" and r["version"] == py.minor and r["build"] == f"3_{cp}"
            for r in arch.values()
        )
    cuda = {r["version"]: r for r in noarch.values() if r["name"] == "cuda-version"}
    assert sorted(cuda, key=lambda v: tuple(map(int, v.split(".")))) == list(CUDA_VERSIONS)
    # (rattler's indexer spells "cudatoolkit 12.9|..." as "cudatoolkit ==12.9|...")
    for version, major in (("12.0", "12"), ("12.9", "12"), ("13.0", "13"), ("13.2", "13")):
        cudatoolkit = f"cudatoolkit {version}|{version}.*"
        assert [c.replace("==", "") for c in cuda[version]["constrains"]] == [
            f"__cuda >={major}",
            cudatoolkit,
        ]
    names = {r["name"] for r in noarch.values()}
    assert {"pip", "setuptools", "wheel", "pytest", "pluggy", "iniconfig", "packaging"} <= names
    if any(p.minor in ("3.8", "3.9", "3.10") for p in offline_channel.pythons):
        assert {"tomli", "exceptiongroup"} <= names
    assert all(r.get("noarch") in ("python", "generic") for r in noarch.values())
    assert len(offline_channel.packages) == len(arch) + len(noarch)


def test_every_channel_python_solves_with_pytest(
    offline_channel: OfflineChannel, solve_specs: Callable[..., list[Any]]
) -> None:
    """The converted metadata is consistent for each python (marker deps included)."""
    for py in offline_channel.pythons:
        records = solve_specs(offline_channel.path, [f"python {py.minor}.*", "pytest", "pip"])
        got = {r.name.normalized: str(r.version) for r in records}
        assert got["python"] == py.version
        assert {"pytest", "pip", "pluggy", "iniconfig", "python_abi"} <= set(got)
        if py.minor in ("3.8", "3.9", "3.10"):
            assert {"tomli", "exceptiongroup"} <= set(got)


def test_python_312_prefix_is_isolated_and_runs_pytest(
    offline_channel: OfflineChannel, solve_install: Callable[..., tuple[Path, list[Any]]]
) -> None:
    py = _need(offline_channel, "3.12.*")
    prefix, records = solve_install(offline_channel.path, ["python 3.12.*", "pytest", "pip"])
    assert {r.name.normalized for r in records} >= {"python", "python_abi", "pytest", "pip"}
    python = prefix / "bin" / "python"
    probe = _run(
        [
            python,
            "-c",
            "import json, site, sys; print(json.dumps([sys.prefix, sys.base_prefix, "
            "'%d.%d' % sys.version_info[:2], site.getsitepackages(), sys.path]))",
        ]
    )
    assert probe.returncode == 0, probe.stderr
    sys_prefix, base_prefix, minor, site_packages, path = json.loads(probe.stdout)
    assert Path(sys_prefix) == prefix
    assert Path(base_prefix) != prefix
    assert minor == "3.12" == py.minor
    assert site_packages == [str(prefix / "lib/python3.12/site-packages")]
    assert not any(p.startswith(base_prefix) and "site-packages" in p for p in path)

    as_module = _run([python, "-m", "pytest", "--version"])
    assert as_module.returncode == 0 and "pytest" in (as_module.stdout + as_module.stderr)
    entry = prefix / "bin" / "pytest"
    assert entry.read_text().splitlines()[0] == f"#!{prefix}/bin/python3.12"
    script = _run([entry, "--version"])
    assert script.returncode == 0, script.stderr
    pip = _run([prefix / "bin" / "pip", "--version"])
    assert pip.returncode == 0 and str(prefix / "lib/python3.12/site-packages") in pip.stdout

    # pytest from the prefix really runs a test in it.
    (prefix.parent / "t").mkdir()
    (prefix.parent / "t" / "test_x.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    run = _run([entry, "-q", "-p", "no:cacheprovider", prefix.parent / "t"])
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_cuda_13_needs_a_cuda_13_driver(
    offline_channel: OfflineChannel, solve_specs: Callable[..., list[Any]]
) -> None:
    from rattler.exceptions import SolverError

    with pytest.raises(SolverError, match="__cuda"):
        solve_specs(offline_channel.path, ["cuda-version 13.*"], {"__cuda": "12"})
    records = solve_specs(offline_channel.path, ["cuda-version 13.*"], {"__cuda": "13"})
    assert [str(r.version) for r in records] == ["13.2"]
    # A 12.x request still solves on a CUDA 13 driver, and picks the newest 12.x.
    records = solve_specs(offline_channel.path, ["cuda-version 12.*"], {"__cuda": "13.0"})
    assert [str(r.version) for r in records] == ["12.9"]


def test_second_build_is_a_cheap_no_op(
    offline_channel: OfflineChannel, no_spawn: list[Sequence[str]]
) -> None:
    again = build_offline_channel(offline_channel.path)
    assert again.rebuilt is False
    assert again.input_hash == offline_channel.input_hash
    assert again.packages == offline_channel.packages
    assert no_spawn == [], f"up-to-date check started processes: {no_spawn}"


def test_up_to_date_check_imports_no_rattler(offline_channel: OfflineChannel) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from harness.channel import build_offline_channel
        ch = build_offline_channel(Path({str(offline_channel.path)!r}))
        print(ch.rebuilt, 'rattler' in sys.modules, 'rattler_build' in sys.modules)
        """
    )
    env = {**os.environ, "HARNESS_WHEELHOUSE": str(default_wheelhouse())}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_find_python_against_the_channel(offline_channel: OfflineChannel) -> None:
    newest = offline_channel.pythons[-1]
    assert find_python(offline_channel, f"{newest.minor}.*").python == newest
    missing = find_python(offline_channel, "3.99.*")
    found = ", ".join(offline_channel.minors)
    assert missing.reason == f"no CPython 3.99 on this machine (found {found})"


def test_c_extension_builds_against_the_bridged_python(
    offline_channel: OfflineChannel,
    solve_install: Callable[..., tuple[Path, list[Any]]],
    tmp_path: Path,
) -> None:
    if shutil.which("gcc") is None and shutil.which(sysconfig.get_config_var("CC") or "cc") is None:
        pytest.skip("no C compiler (gcc) on this machine")
    py = find_python(offline_channel, "3.12.*").python or offline_channel.pythons[-1]
    include = _run(
        [py.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"]
    ).stdout.strip()
    if not (Path(include) / "Python.h").is_file():
        pytest.skip(f"CPython {py.version} has no headers ({include}/Python.h missing)")
    prefix, _ = solve_install(offline_channel.path, [f"python {py.minor}.*", "setuptools"])
    src = tmp_path / "ext"
    src.mkdir()
    (src / "fastsum.c").write_text(
        textwrap.dedent(
            """
            #define PY_SSIZE_T_CLEAN
            #include <Python.h>
            static PyObject *add(PyObject *self, PyObject *args) {
                long a, b;
                if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
                return PyLong_FromLong(a + b);
            }
            static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
            static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "fastsum", NULL, -1, methods};
            PyMODINIT_FUNC PyInit_fastsum(void) { return PyModule_Create(&mod); }
            """
        )
    )
    (src / "setup.py").write_text(
        "from setuptools import Extension, setup\n"
        "setup(name='fastsum', version='0', ext_modules=[Extension('fastsum', ['fastsum.c'])])\n"
    )
    python = prefix / "bin" / "python"
    built = _run([python, "setup.py", "-q", "build_ext", "--inplace"], cwd=src)
    assert built.returncode == 0, built.stdout + built.stderr
    check = _run(
        [
            python,
            "-c",
            "import sys, sysconfig, fastsum; "
            "print(fastsum.add(40, 2), sys.prefix, sysconfig.get_paths()['include'], fastsum.__file__)",
        ],
        cwd=src,
    )
    assert check.returncode == 0, check.stderr
    value, sys_prefix, used_include, module = check.stdout.split()
    assert value == "42" and Path(sys_prefix) == prefix
    assert used_include == include  # headers come from the base interpreter
    tag = "cpython-" + py.minor.replace(".", "")
    assert tag in Path(module).name
