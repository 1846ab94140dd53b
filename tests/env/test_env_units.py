"""Pure pieces of the environment stages: cache layout, channel resolution, roles, report, expansion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.activation import clean_base_env, expand
from harness.cache import Cache, atomic_write_json, read_json
from harness.cell import PackageBuild
from harness.channels import (
    CHANNEL_ALIAS,
    register_named_channel,
    resolve_channel,
    resolve_channels,
    unregister_named_channel,
)
from harness.errors import ChannelError, HarnessError, InstallError
from harness.pypi import requirement
from harness.report import RunReport
from harness.solve import parse_virtual_package, role_requests, solve_timeout
from harness.specs import Dep


def test_cache_root_defaults_beside_manifest_and_ignores_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.delenv("HARNESS_PKGS_DIR", raising=False)
    cache = Cache.for_manifest(tmp_path / "pixi.toml").ensure()
    assert cache.root == tmp_path / ".harness"
    assert cache.pkgs_dir is None
    assert (cache.root / ".gitignore").read_text() == "*\n"
    for sub in ("locks", "envs", "build", "artifacts", "reports", "solve"):
        assert (cache.root / sub).is_dir()
    assert cache.prefix("c1", "test") == tmp_path / ".harness" / "envs" / "c1" / "test"


def test_cache_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HARNESS_PKGS_DIR", str(tmp_path / "pkgs"))
    cache = Cache.for_manifest(tmp_path / "proj" / "pixi.toml")
    assert cache.root == tmp_path / "elsewhere"
    assert cache.pkgs_dir == tmp_path / "pkgs"
    lock = cache.cell_lock("c1")
    key_lock = cache.key_lock("variant-abc")
    assert Path(lock.lock_file).name == "cell-c1.lock"
    assert Path(key_lock.lock_file).name.startswith("key-")
    with lock, key_lock:
        assert lock.is_locked and key_lock.is_locked


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "d" / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    target.write_text("{truncated")
    assert read_json(target) is None


def test_channel_names_urls_and_paths(tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "conda-forge").mkdir()  # a directory with a channel's name is NOT a path
    root = tmp_path
    assert resolve_channel("conda-forge", root).url == f"{CHANNEL_ALIAS}/conda-forge"
    assert resolve_channel("nvidia/label/cuda-12.4.0", root).url == (
        f"{CHANNEL_ALIAS}/nvidia/label/cuda-12.4.0"
    )
    assert resolve_channel("https://prefix.dev/conda-forge/", root).url == (
        "https://prefix.dev/conda-forge"
    )
    local = resolve_channel("./local", root)
    assert local.url == (tmp_path / "local").as_uri() and local.local_path == tmp_path / "local"
    assert resolve_channel(str(tmp_path / "local"), root).url == local.url
    assert resolve_channel((tmp_path / "local").as_uri(), root).url == local.url
    assert resolve_channel("../local", root / "sub").url == local.url
    both = resolve_channels(["./local", str(tmp_path / "local"), "conda-forge"], root)
    assert [c.url for c in both] == [local.url, f"{CHANNEL_ALIAS}/conda-forge"]


def test_missing_channel_path_names_the_channel(tmp_path):
    with pytest.raises(ChannelError) as info:
        resolve_channel("./nope", tmp_path, manifest=tmp_path / "pixi.toml")
    text = str(info.value)
    assert "'./nope'" in text and "pixi.toml" in text and "channels" in text


def test_offline_channel_comes_from_a_registered_provider(tmp_path, monkeypatch):
    from harness import channels

    # Runs earlier in this worker may have registered the offline channel: start without it.
    monkeypatch.setattr(channels, "_NAMED", {})
    offline = tmp_path / "offline-channel"
    offline.mkdir()
    with pytest.raises(ChannelError, match="no provider"):
        resolve_channel("offline", tmp_path)
    register_named_channel("offline", lambda: offline)
    try:
        resolved = resolve_channel("offline", tmp_path)
        assert resolved.url == offline.as_uri() and resolved.written == "offline"
    finally:
        unregister_named_channel("offline")


def test_role_requests(make_cell, tmp_path):
    cell = make_cell(
        "c", deps=["python", "libbar"], variant={"python": "3.12", "cuda-version": "12.8"}
    )
    (test,) = role_requests(cell)
    assert test.role == "test"
    assert test.specs == ("python", "libbar", "cuda-version 12.8.*", "python 3.12.*")
    package = PackageBuild(
        name="mypkg",
        version="1.0",
        source_dir=tmp_path,
        backend="harness-build-script",
        build_deps=(Dep("tool"), Dep("cuda-version")),
        host_deps=(Dep("python"), Dep("mypkg", source="path:.")),
        run_deps=(Dep("libfoo"),),
    )
    cell = make_cell(
        "p", deps=[], variant={"python": "3.12", "cuda-version": "12.8"}, package=package
    )
    # release: no test environment until the package exists, then the package brings its needs
    build, host = role_requests(cell)
    assert build.specs == ("tool", "cuda-version", "cuda-version 12.8.*")  # only pins it names
    assert host.specs == ("python", "cuda-version 12.8.*", "python 3.12.*")
    *_, test = role_requests(cell, "mypkg ==1.0 py312h0_0")
    assert test.specs == ("mypkg ==1.0 py312h0_0", "cuda-version 12.8.*", "python 3.12.*")
    # dev: the package's run and host dependencies form the development environment
    dev = dataclasses.replace(cell, profile="dev", profile_base="dev")
    *_, test = role_requests(dev)
    assert test.specs == ("libfoo", "python", "cuda-version 12.8.*", "python 3.12.*")
    assert role_requests(make_cell("empty")) == ()


def test_virtual_packages_and_timeout(monkeypatch):
    vp = parse_virtual_package("__archspec=1=x86_64")
    assert (vp.name.normalized, str(vp.version), str(vp.build_string)) == (
        "__archspec",
        "1",
        "x86_64",
    )
    vp = parse_virtual_package("__cuda=13")
    assert (str(vp.version), str(vp.build_string)) == ("13", "0")
    with pytest.raises(HarnessError):
        parse_virtual_package("cuda=13")
    monkeypatch.setenv("HARNESS_SOLVE_TIMEOUT", "7.5")
    assert solve_timeout().total_seconds() == 7.5
    monkeypatch.setenv("HARNESS_SOLVE_TIMEOUT", "soon")
    with pytest.raises(HarnessError, match="HARNESS_SOLVE_TIMEOUT"):
        solve_timeout()


def test_report_counts_and_json(tmp_path):
    report = RunReport()
    report.record("a", "solve:test", "done")
    report.record("b", "solve:test", "cached")
    with report.stage("a", "install:test") as stage:
        stage.cached("prefix matches lock")
    with pytest.raises(RuntimeError), report.stage("b", "install:test"):
        raise RuntimeError("boom")
    assert report.counts("solve") == {"done": 1, "cached": 1}
    assert report.counts("install")["cached"] == 1 and report.counts("install")["failed"] == 1
    assert report.counts("install:test", cell="b") == {"failed": 1}
    assert report.counts("build")["done"] == 0
    path = report.write(Cache(tmp_path / "c"))
    assert path.parent.name == "reports" and path.name.startswith("run-")
    data = read_json(path)
    assert data["summary"]["install"] == {"cached": 1, "failed": 1}
    assert data["stages"][-1]["reason"] == "boom"


def test_expand_without_a_shell():
    env = {"CONDA_PREFIX": "/p", "X": "1"}
    assert expand("$CONDA_PREFIX/lib:${X}:%X%", env) == "/p/lib:1:1"
    assert expand("$UNSET-a", env) == "-a"
    assert expand("50%done%", env) == "50%done%"


def test_clean_base_env_drops_foreign_environments():
    base = clean_base_env(
        {
            "PATH": "/old/env/bin:/usr/bin:/venv/bin",
            "CONDA_PREFIX": "/old/env",
            "CONDA_SHLVL": "1",
            "VIRTUAL_ENV": "/venv",
            "PIXI_PROJECT_ROOT": "/x",
            "PYTHONPATH": "/leak",
            "HOME": "/home/u",
        }
    )
    assert base["PATH"] == "/usr/bin"
    assert set(base) == {"PATH", "HOME"}


def test_pypi_requirements(tmp_path):
    (tmp_path / "pkg").mkdir()
    assert requirement("six", "*", tmp_path).args == ("six",)
    assert requirement("six", ">=1.16", tmp_path).args == ("six>=1.16",)
    assert requirement("six", "1.16", tmp_path).args == ("six==1.16",)
    assert requirement("rich", {"version": ">=13", "extras": ["jupyter"]}, tmp_path).args == (
        "rich[jupyter]>=13",
    )
    local = requirement("pkg", {"path": "./pkg"}, tmp_path)
    assert local.args == (f"pkg @ {(tmp_path / 'pkg').as_uri()}",) and local.direct
    assert requirement("pkg", {"path": "./pkg", "editable": True}, tmp_path).args == (
        "-e",
        str(tmp_path / "pkg"),
    )
    git = requirement("x", {"git": "https://g/x.git", "rev": "abc"}, tmp_path)
    assert git.args == ("x @ git+https://g/x.git@abc",)
    with pytest.raises(InstallError, match="does not exist"):
        requirement("gone", {"path": "./gone"}, tmp_path)
    with pytest.raises(InstallError, match="unsupported keys"):
        requirement("x", {"bogus": 1}, tmp_path)
