"""Pure pieces of the offline channel: no pip, no solve, no interpreter runs."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from harness.channel import PythonInfo, default_channel_root, default_wheelhouse, find_python
from harness.channel import wheelhouse as wh
from harness.channel.conda_pkg import FileEntry, PackageSpec, write_package
from harness.channel.cuda import CUDA_VERSIONS, cuda_version_package
from harness.channel.pythons import Probe, discover_candidates, probe_all, select_pythons
from harness.channel.wheels import (
    WheelMeta,
    conda_depends,
    conda_name,
    conda_version_spec,
    is_pure_tag,
    python_depend,
    read_wheel,
)
from harness.errors import ChannelError, HarnessError


def _py(version: str, exe: str | None = None) -> PythonInfo:
    minor = ".".join(version.split(".")[:2])
    return PythonInfo(
        version=version, executable=Path(exe or f"/opt/py{version}/bin/python{minor}"), minor=minor
    )


def _meta(name: str, version: str, requires: tuple[str, ...] = (), rp: str = "") -> WheelMeta:
    return WheelMeta(
        path=Path(f"/wh/{name}-{version}-py3-none-any.whl"),
        sha256="0" * 64,
        name=conda_name(name),
        dist_name=name,
        version=version,
        requires_python=rp,
        requires_dist=requires,
        entry_points=(),
        summary="",
        license="",
    )


def _read_member(archive: Path, member: str) -> bytes:
    with tarfile.open(archive, "r:bz2") as tf:
        fh = tf.extractfile(member)
        assert fh is not None
        return fh.read()


# --- names, tags, specs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pypi", "conda"),
    [
        ("typing_extensions", "typing-extensions"),
        ("Zope.Interface", "zope-interface"),
        ("PyYAML", "pyyaml"),
    ],
)
def test_conda_name_normalises_like_pep503(pypi: str, conda: str) -> None:
    assert conda_name(pypi) == conda


@pytest.mark.parametrize(
    ("name", "pure"),
    [
        ("pytest-8.3.5-py3-none-any.whl", True),
        ("six-1.16.0-py2.py3-none-any.whl", True),
        ("numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl", False),
        ("foo-1.0-cp312-none-any.whl", False),
        ("foo-1.0-py3-abi3-any.whl", False),
        ("not-a-wheel.zip", False),
    ],
)
def test_only_pure_wheel_tags_are_accepted(name: str, pure: bool) -> None:
    assert is_pure_tag(name) is pure


def test_pep440_specifiers_become_conda_specs() -> None:
    from packaging.specifiers import SpecifierSet

    assert conda_version_spec(SpecifierSet(">=1.5,<2")) == "<2,>=1.5"
    assert conda_version_spec(SpecifierSet("==1.0.*")) == "1.0.*"
    assert conda_version_spec(SpecifierSet("~=2.1,!=2.3")) == "!=2.3,~=2.1"
    assert conda_version_spec(SpecifierSet("")) == ""
    assert python_depend(">=3.8") == "python >=3.8"
    assert python_depend("!=3.0.*,>=2.7") == "python >=2.7"
    assert python_depend(">=3.9,<4") == "python <4,>=3.9"
    assert python_depend("") == "python"


def test_conda_specs_parse_in_rattler() -> None:
    from rattler import MatchSpec

    meta = _meta(
        "x", "1", ("a>=1.0.0rc8", "b~=2.1", "c==1.0.*", "d!=1.5,<3", "e[extra]>=1"), ">=3.8"
    )
    for dep in conda_depends(meta, [_py("3.12.1")]):
        MatchSpec(dep)  # raises on anything rattler cannot read


def test_marker_dependencies_follow_the_channel_pythons() -> None:
    meta = _meta(
        "pytest",
        "8.3.5",
        (
            'exceptiongroup>=1.0.0rc8; python_version < "3.11"',
            'tomli>=1; python_version < "3.11"',
            'colorama; sys_platform == "win32"',
            "iniconfig",
            "pluggy<2,>=1.5",
            'pygments>=2.7.2; extra == "dev"',
            'Typing_Extensions; python_version < "3.8"',
        ),
        ">=3.8",
    )
    with_310 = conda_depends(meta, [_py("3.10.13"), _py("3.12.1")])
    only_312 = conda_depends(meta, [_py("3.12.1")])
    assert with_310 == (
        "python >=3.8",
        "exceptiongroup >=1.0.0rc8",
        "iniconfig",
        "pluggy <2,>=1.5",
        "tomli >=1",
    )
    assert only_312 == ("python >=3.8", "iniconfig", "pluggy <2,>=1.5")


def test_marker_for_a_python_the_package_refuses_is_dropped() -> None:
    # 3.8 is in the channel, but this package needs >=3.9: its "<3.9" dep never applies.
    meta = _meta("x", "1", ('backport; python_version < "3.9"',), ">=3.9")
    assert conda_depends(meta, [_py("3.8.18"), _py("3.12.1")]) == ("python >=3.9",)


# --- wheel reading and conversion --------------------------------------------------


def test_read_wheel_metadata(make_wheel: Callable[..., Path]) -> None:
    path = make_wheel(
        "Demo_Pkg",
        "2.0",
        requires=["tomli>=1; python_version < '3.11'"],
        console_scripts={"demo": "demo_pkg.cli:main [extra]"},
    )
    meta = read_wheel(path)
    assert (meta.name, meta.version, meta.requires_python) == ("demo-pkg", "2.0", ">=3.8")
    assert meta.entry_points == ("demo = demo_pkg.cli:main",)
    assert len(meta.sha256) == 64


def test_non_pure_wheel_is_refused(make_wheel: Callable[..., Path]) -> None:
    path = make_wheel("native", tag="cp312-cp312-manylinux_2_17_x86_64")
    with pytest.raises(ChannelError, match="not a pure-Python wheel") as err:
        read_wheel(path)
    assert err.value.hint and str(path) in str(err.value)


def test_broken_wheel_is_a_channel_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ChannelError, match="cannot read wheel"):
        read_wheel(bad)
    with pytest.raises(ChannelError, match="wheel not found"):
        read_wheel(tmp_path / "missing-1.0-py3-none-any.whl")


# --- archives --------------------------------------------------------------------


def test_archives_are_deterministic_and_keep_symlinks(tmp_path: Path) -> None:
    spec = PackageSpec(
        name="demo",
        version="1.0",
        build="0",
        subdir="linux-64",
        files=(
            FileEntry("bin/python", symlink_to="/usr/bin/python3"),
            FileEntry("share/demo.txt", b"hello\n"),
            FileEntry("bin/tool", b"#!/bin/sh\n", executable=True),
        ),
        depends=("python_abi 3.12.* *_cp312",),
    )
    a = write_package(spec, tmp_path / "a")
    b = write_package(spec, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a, "r:bz2") as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert members["bin/python"].issym() and members["bin/python"].linkname == "/usr/bin/python3"
    assert members["bin/tool"].mode == 0o755 and members["share/demo.txt"].mode == 0o644
    paths = json.loads(_read_member(a, "info/paths.json"))["paths"]
    assert [(p["_path"], p["path_type"]) for p in paths] == [
        ("bin/python", "softlink"),
        ("bin/tool", "hardlink"),
        ("share/demo.txt", "hardlink"),
    ]
    index = json.loads(_read_member(a, "info/index.json"))
    assert index["arch"] == "x86_64" and index["platform"] == "linux"


def test_unsafe_payload_paths_are_rejected(tmp_path: Path) -> None:
    spec = PackageSpec(
        "x", "1", "0", "noarch", files=(FileEntry("../escape", b""),), noarch="generic"
    )
    with pytest.raises(ValueError, match="invalid path"):
        write_package(spec, tmp_path)


def test_cuda_version_constraints_match_conda_forge() -> None:
    assert CUDA_VERSIONS[0] == "12.0" and CUDA_VERSIONS[-1] == "13.2" and len(CUDA_VERSIONS) == 13
    assert cuda_version_package("12.8").constrains == ("__cuda >=12", "cudatoolkit 12.8|12.8.*")
    assert cuda_version_package("13.1").constrains == ("__cuda >=13", "cudatoolkit 13.1|13.1.*")
    assert cuda_version_package("13.1").noarch == "generic"
    assert cuda_version_package("13.1").files == ()


# --- interpreter discovery -----------------------------------------------------------


def _probe(cand: str, version: str, base: str | None = None, **kw: object) -> Probe:
    major, minor = (int(x) for x in version.split(".")[:2])
    fields: dict[str, object] = {
        "candidate": cand,
        "stat_key": "k",
        "impl": "CPython",
        "version": version,
        "major": major,
        "minor": minor,
        "base_executable": base or "/bin/sh",  # any existing file
        **kw,
    }
    return Probe.from_json(fields)


def test_selection_prefers_explicit_then_highest_patch() -> None:
    probes = {
        "/a/python3.12": _probe("/a/python3.12", "3.12.1"),
        "/b/python3.12": _probe("/b/python3.12", "3.12.4"),
        "/c/python3.11": _probe("/c/python3.11", "3.11.2"),
        "/d/python3.11": _probe("/d/python3.11", "3.11.7"),
        "/e/python3.7": _probe("/e/python3.7", "3.7.16"),
        "/f/pypy3.10": _probe("/f/pypy3.10", "3.10.14", impl="PyPy"),
        "/g/python3.13t": _probe("/g/python3.13t", "3.13.0", abiflags="t", gil_disabled=True),
    }
    chosen = select_pythons(["/c/python3.11"], [p for p in probes if p != "/c/python3.11"], probes)
    assert [p.version for p in chosen] == ["3.11.2", "3.12.4"]


def test_unusable_explicit_python_is_a_channel_error() -> None:
    probes = {
        "/old": _probe("/old", "2.7.18"),
        "/gone": Probe("/gone", "", error="it does not exist"),
    }
    with pytest.raises(ChannelError, match=r"CPython >= 3\.8 is required"):
        select_pythons(["/old"], [], probes)
    with pytest.raises(ChannelError, match="does not exist"):
        select_pythons(["/gone"], [], probes)


def test_discovery_scans_pyenv_and_path_but_not_shims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exe(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    root = tmp_path / "pyenv"
    a = exe(root / "versions/3.12.1/bin/python3.12")
    exe(root / "versions/3.7.16/bin/python3.7")  # too old: not even probed
    exe(root / "versions/3.12.1/bin/python3.12-config")
    exe(root / "shims/python3.11")
    b = exe(tmp_path / "usr/bin/python3.11")
    (tmp_path / "usr/bin/python3.10").symlink_to(a)  # same file as a pyenv one: dropped
    monkeypatch.setenv("PYENV_ROOT", str(root))
    path = f"{root / 'shims'}:{tmp_path / 'usr/bin'}:{tmp_path / 'nope'}"
    assert discover_candidates(path) == [str(a), str(b)]


def test_probe_cache_avoids_running_interpreters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from harness.channel.pythons import stat_key

    exe = tmp_path / "python3.12"
    exe.write_text("#!/bin/sh\n")
    cached = _probe(str(exe), "3.12.1")
    cached = Probe(**{**cached.to_json(), "stat_key": stat_key(str(exe))})  # type: ignore[arg-type]

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an interpreter was run")

    monkeypatch.setattr(subprocess, "run", boom)
    assert probe_all([str(exe)], {str(exe): cached}) == {str(exe): cached}


def test_real_probe_reports_version(a_python: PythonInfo) -> None:
    from harness.channel.pythons import probe

    pr = probe(str(a_python.executable))
    assert pr.unusable_reason() is None
    assert pr.version == a_python.version and Path(pr.include).is_dir()


# --- find_python ---------------------------------------------------------------------


def test_find_python_gives_skip_reasons() -> None:
    pys = [_py("3.10.13"), _py("3.11.7"), _py("3.12.1"), _py("3.13.0")]
    assert find_python(pys, "3.12.*").python == pys[2]
    assert find_python(pys, "python 3.12").python == pys[2]
    assert find_python(pys, ">=3.11,<3.13").python == pys[2]
    miss = find_python(pys, "3.14.*")
    assert (
        not miss and miss.reason == "no CPython 3.14 on this machine (found 3.10, 3.11, 3.12, 3.13)"
    )
    assert find_python([], "3.12.*").reason == "no CPython 3.12 on this machine (found none)"
    assert find_python(pys, ">=3.14").reason == (
        "no CPython matching '>=3.14' on this machine (found 3.10, 3.11, 3.12, 3.13)"
    )
    with pytest.raises(ChannelError, match="invalid python version spec"):
        find_python(pys, ">=>3")


# --- roots and wheelhouse --------------------------------------------------------------


def test_default_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    assert default_channel_root() == tmp_path / ".harness/channels/offline"
    assert default_channel_root(tmp_path / "c") == tmp_path / "c/channels/offline"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "env"))
    assert default_channel_root() == tmp_path / "env/channels/offline"
    monkeypatch.setenv("HARNESS_WHEELHOUSE", str(tmp_path / "wh"))
    assert default_wheelhouse() == tmp_path / "wh"


def test_resolver_evaluates_markers_for_the_target_python() -> None:
    avail = [
        _meta("pytest", "8.3.5", ('tomli>=1; python_version < "3.11"', "pluggy<2,>=1.5"), ">=3.8"),
        _meta("pytest", "9.0", ("pluggy>=1.6",), ">=3.10"),
        _meta("pluggy", "1.5.0", (), ">=3.8"),
        _meta("pluggy", "1.6.0", (), ">=3.9"),
    ]
    roots = [Requirement("pytest")]
    res38 = wh.resolve(roots, avail, _py("3.8.18"))
    assert [(m.name, m.version) for m in res38.wheels] == [("pluggy", "1.5.0"), ("pytest", "8.3.5")]
    assert res38.missing == ("tomli>=1",)
    res312 = wh.resolve(roots, avail, _py("3.12.1"))
    assert [(m.name, m.version) for m in res312.wheels] == [("pluggy", "1.6.0"), ("pytest", "9.0")]
    assert res312.missing == ()


def test_pip_failure_is_an_actionable_channel_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_pip(args: object, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            args, 1, "", "ERROR: Could not find a version that satisfies the requirement nosuch\n"
        )

    monkeypatch.setattr(wh, "run_pip", fake_pip)
    with pytest.raises(ChannelError) as err:
        wh.ensure_wheels(["nosuch"], [_py("3.12.1")], tmp_path / "wh")
    text = str(err.value)
    assert "pip download for Python 3.12 failed" in text and "nosuch" in text
    assert "HARNESS_WHEELHOUSE" in text and "Traceback" not in text


def test_prefilled_wheelhouse_works_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_wheel: Callable[..., Path]
) -> None:
    house = tmp_path / "wheels"  # make_wheel writes here
    make_wheel("alpha", "1.0", requires=["beta>=2"])
    make_wheel("beta", "2.1")
    calls: list[object] = []

    def offline_pip(args: object, **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 1, "", "ERROR: network is unreachable\n")

    monkeypatch.setattr(wh, "run_pip", offline_pip)
    py = _py("3.12.1")
    res = wh.ensure_wheels(["alpha"], [py], house)
    assert [m.name for m in res["3.12"].wheels] == ["alpha", "beta"] and len(calls) == 1
    # The closure is now recorded: the next call does not even try pip.
    res = wh.ensure_wheels(["alpha"], [py], house)
    assert [m.name for m in res["3.12"].wheels] == ["alpha", "beta"] and len(calls) == 1


def test_bad_requirement_is_a_channel_error() -> None:
    with pytest.raises(ChannelError, match="invalid requirement"):
        wh.parse_requirements(["pytest >>> 8"])


def test_channel_error_is_a_harness_error() -> None:
    assert issubclass(ChannelError, HarnessError) and ChannelError("x").exit_code == 2
