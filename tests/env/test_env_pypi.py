"""pypi-dependencies: a local wheel installed by uv into a prefix whose python is a real interpreter."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from harness.report import RunReport
from harness.stages import plan, prepare

PYENV = Path("~/.pyenv/versions/3.12.1").expanduser()
INTERPRETER = PYENV / "bin" / "python3.12"


def write_wheel(directory: Path, name: str = "tinypkg", version: str = "0.1") -> Path:
    """A pure wheel written by hand (no build backend, no network)."""
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record_lines = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_path = f"{name}-{version}.dist-info/RECORD"
    record_lines.append(f"{record_path},,")
    files[record_path] = "\n".join(record_lines) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture
def python_channel(tmp_path: Path, channel_kit) -> Path:
    """A ``python 3.12.1`` package bridging the pyenv interpreter (pyvenv.cfg + symlinks)."""
    if not INTERPRETER.exists():
        pytest.skip(f"needs the pyenv interpreter {INTERPRETER} to bridge a real python")
    Pkg = channel_kit.Pkg
    python = Pkg(
        "python",
        "3.12.1",
        "linux-64",
        build="pyenv_0",
        files={
            "pyvenv.cfg": (
                f"home = {PYENV}/bin\ninclude-system-site-packages = false\n"
                f"version = 3.12.1\nexecutable = {INTERPRETER}\n"
            ),
            "lib/python3.12/site-packages/_conda_shim_marker.txt": "keep dir\n",
        },
        symlinks={f"bin/{n}": str(INTERPRETER) for n in ("python", "python3", "python3.12")},
    )
    return channel_kit.build(tmp_path / "pychan", [python])


def test_local_wheel_through_uv_and_not_reinstalled(
    make_cell, cache, project, python_channel, tmp_path, monkeypatch
):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("UV_OFFLINE", "1")  # proves no index is consulted
    wheel = write_wheel(project)
    cell = make_cell(
        "py312-pypi",
        deps=["python 3.12.*"],
        channels=(python_channel.as_uri(),),
        pypi={"tinypkg": {"path": f"./{wheel.name}"}},
    )
    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    assert report.counts("pypi") == {"done": 1}
    prefix = prepared.test_prefix
    out = subprocess.run(
        ["python", "-c", "import sys, tinypkg; print(tinypkg.VALUE, tinypkg.__file__, sys.prefix)"],
        env=dict(prepared.env),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "42"
    assert out[1].startswith(str(prefix / "lib/python3.12/site-packages/tinypkg"))
    assert out[2] == str(prefix)

    again = RunReport()
    prepare(cell, cache=cache, report=again)
    assert again.counts("pypi") == {"cached": 1}
    assert again.counts()["done"] == 0
    assert [s.status for s in plan(cell, cache)] == ["cached", "cached", "cached"]

    # a prefix reinstalled by conda gets its PyPI packages back
    shutil.rmtree(prefix)
    third = RunReport()
    prepare(cell, cache=cache, report=third)
    assert third.counts("install") == {"done": 1} and third.counts("pypi") == {"done": 1}
    assert (prefix / "lib/python3.12/site-packages/tinypkg/__init__.py").exists()


def test_a_conda_package_that_pypi_replaced_is_not_repaired_at_every_run(
    make_cell, cache, project, python_channel, channel_kit, tmp_path, monkeypatch
):
    """uv replaces the conda ``tinypkg`` 0.1 with the wheel's 0.2: that is the environment the
    manifest asks for, not damage, so ``--repair`` leaves it (and still repairs real damage)."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("UV_OFFLINE", "1")
    site = "lib/python3.12/site-packages"
    conda_files = {
        f"{site}/tinypkg/__init__.py": "VALUE = 1\n",
        f"{site}/tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        f"{site}/tinypkg-0.1.dist-info/INSTALLER": "conda\n",
    }
    conda_files[f"{site}/tinypkg-0.1.dist-info/RECORD"] = "".join(
        f"{path.removeprefix(site + '/')},,\n" for path in [*conda_files, f"{site}/tinypkg-0.1.dist-info/RECORD"]
    )
    other = {"share/other/data.txt": "other\n"}
    chan = channel_kit.build(tmp_path / "tinychan", [
        channel_kit.Pkg("tinypkg", "0.1", "linux-64", files=conda_files),
        channel_kit.Pkg("other", "1.0", "linux-64", files=other),
    ])
    wheel = write_wheel(project, version="0.2")
    cell = make_cell(
        "py312-replaced",
        deps=["python 3.12.*", "tinypkg", "other"],
        channels=(python_channel.as_uri(), chan.as_uri()),
        pypi={"tinypkg": {"path": f"./{wheel.name}"}},
    )
    prepared = prepare(cell, cache=cache, report=RunReport())
    prefix = prepared.test_prefix
    assert (prefix / site / "tinypkg/__init__.py").read_text() == "VALUE = 42\n"  # the wheel's
    assert not (prefix / site / "tinypkg-0.1.dist-info").exists()  # uv removed conda's

    again = RunReport()
    prepare(cell, cache=cache, report=again, repair=True)
    assert again.counts("install") == {"cached": 1}, [(r.stage, r.status, r.reason) for r in again.select()]
    assert again.counts("pypi") == {"cached": 1}
    assert (prefix / site / "tinypkg/__init__.py").read_text() == "VALUE = 42\n"

    (prefix / "share/other/data.txt").unlink()  # real damage, in a package PyPI did not touch
    third = RunReport()
    prepare(cell, cache=cache, report=third, repair=True)
    assert third.counts("install") == {"done": 1}
    assert (prefix / "share/other/data.txt").read_text() == "other\n"
    assert (prefix / site / "tinypkg/__init__.py").read_text() == "VALUE = 42\n"  # PyPI's again
