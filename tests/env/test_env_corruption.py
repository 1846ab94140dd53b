"""Corruption of the cache, the channels and the prefixes: detected, then repaired or refused.

Each test damages one thing the way a full disk, an interrupted copy or a
stray edit would, and proves what the next run does about it with the run
report's counts and reasons, the files on disk, and the error's text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from rattler import LockFile
from rattler.package_streaming import extract

from harness.build.driver import ARTIFACT_META, DamagedArtifactWarning, read_artifact
from harness.cache import Cache
from harness.cell import PackageBuild
from harness.errors import InstallError
from harness.frozen import FrozenDict
from harness.lock import SIDECAR_NAME, StaleLockWarning, lock_path, read_lock
from harness.prefix import (
    FILE_CHANGED,
    FILE_MISSING,
    INCOMPLETE_MARKER,
    INSTALLED_MARKER,
    check_files,
    verify_prefix,
)
from harness.report import RunReport
from harness.specs import Dep
from harness.stages import prepare


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truncate(path: Path, size: int) -> None:
    """Truncate in place, as a full disk does: every hard link to the file sees it."""
    with open(path, "r+b") as handle:
        handle.truncate(size)


def _flip_last_byte(path: Path) -> None:
    """Change the content in place and keep the size."""
    with open(path, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))


# -- 1. the lock file ---------------------------------------------------------------------


def _edit_lock(path: Path) -> None:
    """A hand edit that stays a valid lock: libfoo 2.0 swapped for 1.0 (a silent downgrade)."""
    edited = path.read_text().replace("libfoo-2.0-0.conda", "libfoo-1.0-0.conda")
    assert edited != path.read_text()
    path.write_text(edited)
    (env,) = [env for name, env in LockFile.from_path(path).environments() if name == "test"]
    versions = {str(r.version) for r in env.conda_repodata_records()["linux-64"]}
    assert "1.0" in versions and "2.0" not in versions  # rattler would read and install it


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "does not match"),
        (lambda p: p.write_text("version: 7\nenvironments: [\n"), "does not match"),
        (_edit_lock, "does not match"),
        (lambda p: p.with_name(SIDECAR_NAME).unlink(), "inputs record is missing"),
    ],
    ids=["truncated", "garbage", "edited", "no-sidecar"],
)
def test_untrusted_lock_is_resolved_with_a_warning(make_cell, cache, damage, problem):
    cell = make_cell("lock-damage", deps=["libbar"])
    prepare(cell, cache=cache, report=RunReport())
    path = lock_path(cache, cell.id)
    damage(path)

    report = RunReport()
    with pytest.warns(StaleLockWarning) as caught:
        prepared = prepare(cell, cache=cache, report=report)
    (message,) = {str(w.message) for w in caught}
    assert "'lock-damage'" in message and str(path) in message
    assert problem in message and message.endswith("re-solving")
    assert report.counts("solve") == {"done": 1}
    assert report.select("solve")[0].reason.startswith("lock untrusted")
    # The re-solve gives the same packages as before the damage: the prefix is kept.
    assert report.counts("install") == {"cached": 1}
    assert {(r.name.normalized, str(r.version)) for r in prepared.records["test"]} == {
        ("libbar", "1.0"),
        ("libfoo", "2.0"),
    }
    state = read_lock(cache, cell)
    assert state.problem is None and set(state.roles) == {"test"}

    again = RunReport()
    prepare(cell, cache=cache, report=again)
    assert again.counts() == {"cached": 3}  # solve, install, activate


# -- 2. archives of a local channel --------------------------------------------------------


@pytest.fixture
def shachan(tmp_path, channel_kit) -> Path:
    """A channel of its own: these tests damage its archives."""
    Pkg = channel_kit.Pkg
    return channel_kit.build(
        tmp_path / "shachan", [Pkg("shapkg", "1.0", files={"share/shapkg/data.txt": "x" * 4000})]
    )


def test_truncated_archive_is_refused_with_the_fix(make_cell, cache, shachan):
    archive = shachan / "noarch" / "shapkg-1.0-0.conda"
    locked_sha, locked_size = _sha256(archive), archive.stat().st_size
    _truncate(archive, locked_size // 2)
    cell = make_cell("sha-truncated", deps=["shapkg"], channels=(shachan.as_uri(),))

    report = RunReport()
    with pytest.raises(InstallError) as info:
        prepare(cell, cache=cache, report=report)
    text = str(info.value)
    for needle in (
        "package shapkg 1.0 0",
        "cell 'sha-truncated', environment 'test'",
        str(archive),
        f"expected sha256: {locked_sha}",
        f"actual sha256:   {_sha256(archive)}",
        f"expected size:   {locked_size} bytes",
        f"actual size:     {locked_size // 2} bytes",
        "hint: the archive is truncated",
        "harness channel offline --force",
    ):
        assert needle in text, needle
    assert report.counts("install") == {"failed": 1}
    prefix = cache.prefix(cell.id, "test")
    assert not (prefix / "conda-meta" / INSTALLED_MARKER).exists()
    assert not (prefix / "share" / "shapkg").exists()  # refused before rattler linked anything


def test_altered_archive_is_refused_and_accepted_once_restored(make_cell, cache, shachan, tmp_path):
    archive = shachan / "noarch" / "shapkg-1.0-0.conda"
    good = tmp_path / "good.conda"
    shutil.copy2(archive, good)
    _flip_last_byte(archive)
    cell = make_cell("sha-altered", deps=["shapkg"], channels=(shachan.as_uri(),))

    with pytest.raises(InstallError) as info:
        prepare(cell, cache=cache, report=RunReport())
    text = str(info.value)
    assert f"expected sha256: {_sha256(good)}" in text
    assert f"actual sha256:   {_sha256(archive)}" in text
    assert "size" not in text.split("hint:")[0]  # same size: no size lines
    assert "rebuilt or modified after the lock was made" in text and "re-solve" in text

    shutil.copy2(good, archive)  # the fix: the archive the lock was made from
    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    assert report.counts("solve") == {"cached": 1}  # the lock written before the refusal holds
    assert report.counts("install") == {"done": 1}
    assert (prepared.test_prefix / "share/shapkg/data.txt").read_text() == "x" * 4000


# -- 3. the built artifact -----------------------------------------------------------------


@pytest.fixture
def package_cell(make_cell, project):
    """A release cell that builds ``mypkg`` with a script into a conda package."""
    source = project / "src"
    source.mkdir()
    (source / "data.txt").write_text("payload\n" * 200)
    package = PackageBuild(
        name="mypkg",
        version="1.0",
        source_dir=source,
        backend="harness-build-script",
        config=FrozenDict(
            {
                "script": [
                    "mkdir -p $PREFIX/share/mypkg",
                    "cp $SRC_DIR/data.txt $PREFIX/share/mypkg/",
                    # every build differs: a rebuilt artifact is a new archive
                    "od -An -tx1 -N16 /dev/urandom > $PREFIX/share/mypkg/stamp.txt",
                ]
            }
        ),
        host_deps=(Dep("libfoo"),),
        run_deps=(Dep("libbar"),),
    )
    return make_cell("pkg-art", deps=["libbar"], package=package)


def _artifact_dir(cache: Cache) -> Path:
    (directory,) = (cache.artifacts_dir / "mypkg").iterdir()
    return directory


@pytest.mark.parametrize("profile", ["release", "dev"])
@pytest.mark.parametrize(
    ("damage", "why"),
    [(lambda a: _truncate(a, a.stat().st_size - 100), "truncated since"), (_flip_last_byte, "sha256")],
    ids=["truncated", "altered"],
)
def test_damaged_artifact_is_not_trusted_and_is_rebuilt(package_cell, cache, damage, why, profile, tmp_path):
    package_cell = dataclasses.replace(package_cell, profile=profile, profile_base=profile)
    first = RunReport()
    prepared = prepare(package_cell, cache=cache, report=first)
    assert first.counts("build") == {"done": 1}
    directory = _artifact_dir(cache)
    meta = json.loads((directory / ARTIFACT_META).read_text())
    archive = prepared.artifact.archive
    assert meta["archive_sha256"] == _sha256(archive)
    assert meta["archive_size"] == archive.stat().st_size
    assert read_artifact(directory) == prepared.artifact

    original = archive.read_bytes()
    damage(archive)
    with pytest.warns(DamagedArtifactWarning) as caught:
        assert read_artifact(directory) is None
    (message,) = {str(w.message) for w in caught}
    assert str(directory) in message and archive.name in message and why in message

    report = RunReport()
    with pytest.warns(DamagedArtifactWarning, match="will be built again"):
        rebuilt = prepare(package_cell, cache=cache, report=report)
    assert report.counts("build") == {"done": 1}
    assert rebuilt.artifact.directory == directory  # same key and sources: same place
    meta = json.loads((directory / ARTIFACT_META).read_text())
    assert meta["archive_sha256"] == _sha256(rebuilt.artifact.archive)
    assert rebuilt.artifact.archive.read_bytes() != original
    # the test prefix holds the new build, intact
    unpacked = tmp_path / "unpacked"
    extract(rebuilt.artifact.archive, unpacked)
    stamp = unpacked / "share/mypkg/stamp.txt"
    assert (rebuilt.test_prefix / "share/mypkg/stamp.txt").read_text() == stamp.read_text()
    assert check_files(rebuilt.test_prefix, rebuilt.records["test"], hashes=True) == []
    assert (rebuilt.test_prefix / "share/mypkg/data.txt").read_text() == "payload\n" * 200

    again = RunReport()
    prepare(package_cell, cache=cache, report=again)
    assert again.counts("build") == {"cached": 1}


def test_artifact_without_a_recorded_sha256_is_rebuilt(package_cell, cache):
    prepare(package_cell, cache=cache, report=RunReport())
    meta_path = _artifact_dir(cache) / ARTIFACT_META
    meta = json.loads(meta_path.read_text())
    del meta["archive_sha256"]
    meta_path.write_text(json.dumps(meta))
    report = RunReport()
    with pytest.warns(DamagedArtifactWarning, match="records no sha256"):
        prepare(package_cell, cache=cache, report=report)
    assert report.counts("build") == {"done": 1}
    assert "archive_sha256" in json.loads(meta_path.read_text())


# -- 4. files of an installed prefix -------------------------------------------------------


@pytest.fixture
def own_pkgs(project: Path, tmp_path: Path) -> Cache:
    """A cache with a package cache of its own: truncating a hard-linked file damages it too."""
    return Cache(root=project / ".harness", pkgs_dir=tmp_path / "own-pkgs")


@pytest.fixture
def filechan(tmp_path, channel_kit) -> Path:
    Pkg = channel_kit.Pkg
    files = {
        "share/filepkg/one.txt": "one\n" * 500,
        "share/filepkg/two.txt": "two\n" * 500,
        "share/filepkg/three.txt": "three\n",
        "bin/filetool": "#!/bin/sh\necho tool\n",
    }
    return channel_kit.build(
        tmp_path / "filechan",
        [Pkg("filepkg", "1.0", files=files), Pkg("other", "2.0", depends=("filepkg",))],
    )


def test_deleted_file_is_restored_by_repair_and_only_by_repair(make_cell, own_pkgs, filechan):
    cell = make_cell("files-deleted", deps=["other"], channels=(filechan.as_uri(),))
    prepared = prepare(cell, cache=own_pkgs, report=RunReport())
    prefix = prepared.test_prefix
    (prefix / "share/filepkg/two.txt").unlink()
    (prefix / "bin/filetool").unlink()

    # A warm run stays cheap: markers only, no per-file checks, so the damage stays.
    warm = RunReport()
    prepare(cell, cache=own_pkgs, report=warm)
    assert warm.counts("install") == {"cached": 1}
    assert not (prefix / "share/filepkg/two.txt").exists()
    damage = check_files(prefix, prepared.records["test"])
    assert {(d.package, d.path, d.problem) for d in damage} == {
        ("filepkg", "share/filepkg/two.txt", FILE_MISSING),
        ("filepkg", "bin/filetool", FILE_MISSING),
    }

    report = RunReport()
    prepare(cell, cache=own_pkgs, report=report, repair=True)
    assert report.counts("install") == {"done": 1}
    assert report.select("install")[0].reason == (
        "repaired: envs/files-deleted/test: 2 files missing from filepkg 1.0 "
        "(bin/filetool, share/filepkg/two.txt)"
    )
    assert (prefix / "share/filepkg/two.txt").read_text() == "two\n" * 500
    assert (prefix / "bin/filetool").stat().st_mode & 0o111
    assert check_files(prefix, prepared.records["test"], hashes=True) == []
    assert verify_prefix(prefix, prepared.records["test"]) == []

    again = RunReport()
    prepare(cell, cache=own_pkgs, report=again, repair=True)
    assert again.counts("install") == {"cached": 1}  # nothing damaged: nothing reinstalled


@pytest.mark.parametrize("pkgs", ["harness", "rattler-default"])
def test_file_truncated_in_place_is_repaired_from_its_archive(
    make_cell, project, tmp_path, filechan, monkeypatch, pkgs
):
    """The prefix hard-links from the package cache: the cache's copy is truncated too.

    Both package caches are private to the test: ``HARNESS_PKGS_DIR`` (``Cache.pkgs_dir``)
    and rattler's default one, redirected with ``RATTLER_CACHE_DIR``.
    """
    pkgs_dir = tmp_path / "own-pkgs"
    if pkgs == "harness":
        cache = Cache(root=project / ".harness", pkgs_dir=pkgs_dir)
    else:
        monkeypatch.setenv("RATTLER_CACHE_DIR", str(tmp_path / "rattler-cache"))
        pkgs_dir = tmp_path / "rattler-cache" / "pkgs"
        cache = Cache(root=project / ".harness", pkgs_dir=None)
    cell = make_cell("files-truncated", deps=["other"], channels=(filechan.as_uri(),))
    prepared = prepare(cell, cache=cache, report=RunReport())
    target = prepared.test_prefix / "share/filepkg/one.txt"
    assert target.stat().st_nlink >= 2
    _truncate(target, 10)
    cached = pkgs_dir / "filepkg-1.0-0" / "share/filepkg/one.txt"
    assert cached.stat().st_size == 10  # the shared copy is damaged as well

    report = RunReport()
    prepare(cell, cache=cache, report=report, repair=True)
    assert report.select("install")[0].reason == (
        "repaired: envs/files-truncated/test: 1 file changed in filepkg 1.0 "
        "(share/filepkg/one.txt: 10 bytes, installed 2000)"
    )
    assert target.read_text() == "one\n" * 500
    assert cached.read_text() == "one\n" * 500  # re-extracted from the archive


def test_same_size_edit_is_found_only_with_hashes(make_cell, own_pkgs, filechan):
    cell = make_cell("files-edited", deps=["other"], channels=(filechan.as_uri(),))
    prepared = prepare(cell, cache=own_pkgs, report=RunReport())
    target = prepared.test_prefix / "share/filepkg/three.txt"
    target.unlink()  # break the hard link, then write other content of the same size
    target.write_text("THREE\n")
    records = prepared.records["test"]
    assert check_files(prepared.test_prefix, records) == []  # existence and size: cheap
    (damage,) = check_files(prepared.test_prefix, records, hashes=True)
    assert (damage.path, damage.problem, damage.detail) == (
        "share/filepkg/three.txt",
        FILE_CHANGED,
        "content differs (sha256)",
    )


def test_unreadable_package_record_reinstalls_the_prefix(make_cell, own_pkgs, filechan):
    cell = make_cell("files-record", deps=["other"], channels=(filechan.as_uri(),))
    prepared = prepare(cell, cache=own_pkgs, report=RunReport())
    (record,) = (prepared.test_prefix / "conda-meta").glob("other-2.0-0.json")
    record.write_text(record.read_text()[:40])  # truncated JSON: rattler could not read it
    (prepared.test_prefix / "share/filepkg/two.txt").unlink()
    _truncate(prepared.test_prefix / "share/filepkg/one.txt", 10)  # the package cache's copy too

    report = RunReport()
    prepare(cell, cache=own_pkgs, report=report, repair=True)
    reason = report.select("install")[0].reason
    assert reason.startswith("repaired: envs/files-record/test: ")
    assert "the record of other 2.0 is unreadable (conda-meta/other-2.0-0.json)" in reason
    assert "1 file missing from filepkg 1.0 (share/filepkg/two.txt)" in reason
    assert "1 file changed in filepkg 1.0 (share/filepkg/one.txt: 10 bytes, installed 2000)" in reason
    assert json.loads(record.read_text())["name"] == "other"
    assert verify_prefix(prepared.test_prefix, prepared.records["test"]) == []
    assert check_files(prepared.test_prefix, prepared.records["test"], hashes=True) == []


def test_repair_refuses_to_relink_from_a_damaged_archive(make_cell, own_pkgs, filechan):
    cell = make_cell("files-refused", deps=["other"], channels=(filechan.as_uri(),))
    prepared = prepare(cell, cache=own_pkgs, report=RunReport())
    _truncate(prepared.test_prefix / "share/filepkg/one.txt", 10)  # prefix and package cache
    archive = filechan / "noarch" / "filepkg-1.0-0.conda"
    _truncate(archive, 100)  # and the archive the cache would be re-extracted from

    report = RunReport()
    with pytest.raises(InstallError) as info:
        prepare(cell, cache=own_pkgs, report=report, repair=True)
    text = str(info.value)
    assert "package filepkg 1.0 0 (cell 'files-refused', environment 'test')" in text
    assert str(archive) in text and "hint: the archive is truncated" in text
    assert report.counts("install") == {"failed": 1}
    # the prefix is not trusted by the next run either
    assert (prepared.test_prefix / "conda-meta" / INCOMPLETE_MARKER).exists()


def test_repair_checks_every_prefix_of_a_package_cell(package_cell, cache):
    prepared = prepare(package_cell, cache=cache, report=RunReport())
    assert set(prepared.prefixes) == {"host", "test"}
    (prepared.prefixes["host"] / "share/libfoo/2.0.txt").unlink()
    (prepared.test_prefix / "share/mypkg/data.txt").unlink()

    report = RunReport()
    prepare(package_cell, cache=cache, report=report, repair=True)
    reasons = {r.stage: r.reason for r in report.select("install")}
    assert reasons == {
        "install:host": "repaired: envs/pkg-art/host: 1 file missing from libfoo 2.0 "
        "(share/libfoo/2.0.txt)",
        "install:test": "repaired: envs/pkg-art/test: 1 file missing from mypkg 1.0 "
        "(share/mypkg/data.txt)",
    }
    assert report.counts("build") == {"cached": 1}  # the host prefix was repaired, not changed
    assert (prepared.test_prefix / "share/mypkg/data.txt").exists()


@pytest.mark.slow
def test_missing_pytest_module_is_repaired_in_a_real_test_prefix(offline_channel, make_cell, cache):
    """The offline channel's real python and pytest (noarch: python paths, entry points)."""
    py = offline_channel.pythons[0]
    cell = make_cell("py-real", deps=[f"python =={py.version}", "pytest"], channels=(offline_channel.url,))
    prepared = prepare(cell, cache=cache, report=RunReport())
    (pytest_record,) = [r for r in prepared.records["test"] if r.name.normalized == "pytest"]
    module = f"lib/python{py.minor}/site-packages/_pytest/main.py"
    (prepared.test_prefix / module).unlink()

    report = RunReport()
    prepare(cell, cache=cache, report=report, repair=True)
    assert report.select("install")[0].reason == (
        f"repaired: envs/py-real/test: 1 file missing from pytest {pytest_record.version} ({module})"
    )
    assert check_files(prepared.test_prefix, prepared.records["test"], hashes=True) == []
