"""prepare(): solve with declared virtual packages, lock, install, activate; cached on the second run.

Every "no needless work" claim is proved with the run report's counts.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from rattler import LockFile

from harness.cell import PackageBuild
from harness.errors import ChannelError, InstallError, SolveError
from harness.lock import StaleLockWarning, lock_path
from harness.prefix import INCOMPLETE_MARKER, INSTALLED_MARKER, verify_prefix
from harness.report import RunReport
from harness.specs import Dep
from harness.stages import plan, prepare, prepare_many


def _version_of(prepared, name, role="test"):
    (record,) = [r for r in prepared.records[role] if r.name.normalized == name]
    return str(record.version)


def matrix(make_cell):
    """python x cuda, pinned by variant, with __cuda=12 and __cuda=13 cells in one run."""
    cells = []
    for py in ("3.12", "3.13"):
        for cu, cuda_version in (("12", "12.8"), ("13", "13.0")):
            cells.append(
                make_cell(
                    f"py{py.replace('.', '')}-cu{cu}",
                    deps=["python", "cudakernel"],
                    variant={"python": py, "cuda-version": cuda_version},
                    cuda=cu,
                )
            )
    return cells


def test_matrix_cells_solve_to_their_own_cuda_and_second_run_is_cached(make_cell, cache):
    cells = matrix(make_cell)
    report = RunReport()
    outcome = prepare_many(cells, cache=cache, report=report)
    assert outcome.ok, outcome.failures
    assert report.counts("solve") == {"done": 4}
    assert report.counts("install") == {"done": 4}
    for cell in cells:
        prepared = outcome.prepared[cell.id]
        assert _version_of(prepared, "cuda-version") == cell.variant["cuda-version"]
        assert _version_of(prepared, "python").startswith(cell.variant["python"] + ".")
        assert verify_prefix(prepared.test_prefix, prepared.records["test"]) == []
        # hard-linked from the shared package cache, not copied
        assert (prepared.test_prefix / "bin" / "python-fake").stat().st_nlink >= 2
        # the lock records the cell's DECLARED virtual packages, one environment per role
        lock = LockFile.from_path(prepared.lock_path)
        assert lock.platforms()[0].virtual_packages == list(cell.virtual_packages)
        assert [name for name, _ in lock.environments()] == ["test"]
    assert "__cuda=12" in cells[0].virtual_packages and "__cuda=13" in cells[1].virtual_packages

    again = RunReport()
    outcome = prepare_many(cells, cache=cache, report=again)
    assert outcome.ok
    assert again.counts("solve") == {"cached": 4}
    assert again.counts("install") == {"cached": 4}
    assert again.counts()["done"] == 0

    # change one dependency of one cell: only that cell re-solves and re-installs
    changed = make_cell(
        cells[0].id,
        deps=["python", "cudakernel", "libfoo ==1.0"],
        variant=dict(cells[0].variant),
        cuda="12",
    )
    third = RunReport()
    outcome = prepare_many([changed, *cells[1:]], cache=cache, report=third)
    assert outcome.ok
    assert third.counts("solve") == {"done": 1, "cached": 3}
    assert third.counts("solve", cell=changed.id) == {"done": 1}
    assert third.select("solve", cell=changed.id)[0].reason == "inputs changed: specs"
    assert third.counts("install") == {"done": 1, "cached": 3}
    assert _version_of(outcome.prepared[changed.id], "libfoo") == "1.0"


def test_declared_cuda_decides_without_a_pin(make_cell, cache):
    """No cuda-version pin: __cuda=12 can only take cuda-version 12.x; __cuda=13 takes 13.x."""
    report = RunReport()
    outcome = prepare_many(
        [
            make_cell("cu12", deps=["cudakernel"], cuda="12"),
            make_cell("cu13", deps=["cudakernel"], cuda="13"),
        ],
        cache=cache,
        report=report,
    )
    assert outcome.ok, outcome.failures
    assert _version_of(outcome.prepared["cu12"], "cuda-version") == "12.8"
    assert _version_of(outcome.prepared["cu13"], "cuda-version") == "13.0"


def test_plan_reads_only_and_says_why(make_cell, cache):
    cell = make_cell("planned", deps=["libbar"])
    steps = plan(cell, cache)
    assert [(s.stage, s.status, s.reason) for s in steps] == [
        ("solve:test", "to do", "no lock"),
        ("install:test", "to do", "prefix missing"),
    ]
    assert not lock_path(cache, cell.id).exists()  # plan never solves
    prepare(cell, cache=cache, report=RunReport())
    assert [s.status for s in plan(cell, cache)] == ["cached", "cached"]
    changed = make_cell("planned", deps=["libbar", "libfoo ==1.0"])
    first = plan(changed, cache)[0]
    assert (first.status, first.reason) == ("to do", "inputs changed: specs")
    update = RunReport()
    prepare(cell, cache=cache, report=update, update=True)
    assert update.select("solve")[0].reason == "update requested"
    assert update.counts("install") == {"cached": 1}  # same packages: the prefix is kept
    (cache.prefix(cell.id, "test") / "conda-meta" / INCOMPLETE_MARKER).write_text("{}")
    assert plan(cell, cache)[1].reason == "prefix incomplete (interrupted run)"


def test_package_cell_solves_build_host_and_test(make_cell, cache, project):
    package = PackageBuild(
        name="mypkg",
        version="1.0",
        source_dir=project,
        backend="harness-build-script",
        build_deps=(Dep("tool"),),
        host_deps=(Dep("python"), Dep("libfoo")),
        run_deps=(Dep("libbar"),),
    )
    release = make_cell("pkg-py313", deps=["python"], variant={"python": "3.13"}, package=package)
    report = RunReport()
    prepared = prepare(release, cache=cache, report=report, build=False)
    # A release test prefix is solved from the built package: without a build it cannot be.
    assert report.counts("solve") == {"done": 2, "skipped": 1}
    assert report.counts("install") == {"done": 2}
    assert report.counts("build") == {"skipped": 1}
    assert sorted(prepared.prefixes) == ["build", "host"]
    assert [p["name"] for p in prepared.packages("build")] == ["tool"]
    assert _version_of(prepared, "python", "host") == "3.13.0"

    dev = dataclasses.replace(release, id="pkg-py313-dev", profile="dev", profile_base="dev")
    report = RunReport()
    prepared = prepare(dev, cache=cache, report=report, build=False)
    assert report.counts("solve") == {"done": 3} and report.counts("install") == {"done": 3}
    # dev: a development environment, the package's host and run dependencies included
    assert {p["name"] for p in prepared.packages("test")} == {"python", "libbar", "libfoo"}
    lock = LockFile.from_path(prepared.lock_path)
    assert sorted(name for name, _ in lock.environments()) == ["build", "host", "test"]


def test_unsolvable_cell_is_named_and_others_still_succeed(make_cell, cache):
    conflict = make_cell(
        "py312-conflict", deps=["needsnew", "needsold"], variant={"python": "3.12"}
    )
    wrong_cuda = make_cell(
        "cu12-wants-13", deps=["cudakernel"], variant={"cuda-version": "13.0"}, cuda="12"
    )
    good = make_cell("good", deps=["libbar"])
    no_channel = make_cell("no-channel", deps=["libbar"], channels=("./missing-channel",))
    report = RunReport()
    outcome = prepare_many([conflict, wrong_cuda, no_channel, good], cache=cache, report=report)
    assert sorted(outcome.failures) == ["cu12-wants-13", "no-channel", "py312-conflict"]
    assert "good" in outcome.prepared
    assert isinstance(outcome.failures["no-channel"], ChannelError)
    assert report.counts("prepare", cell="no-channel") == {"failed": 1}
    assert "./missing-channel" in str(outcome.failures["no-channel"])
    assert report.counts("solve") == {"failed": 2, "done": 1}
    assert report.counts("install") == {"done": 1}

    error = outcome.failures["py312-conflict"]
    assert isinstance(error, SolveError)
    text = str(error)
    for needle in (
        "py312-conflict",
        "python=3.12",
        "__glibc=2.28",
        "needsnew",
        "needsold",
        "libfoo",
    ):
        assert needle in text, needle
    assert "channels: file://" in text

    text = str(outcome.failures["cu12-wants-13"])
    for needle in ("cu12-wants-13", "cuda-version=13.0", "__cuda=12", "__cuda >=13"):
        assert needle in text, needle


def test_corrupt_lock_is_resolved_with_a_warning(make_cell, cache):
    cell = make_cell("corrupt", deps=["libbar"])
    prepare(cell, cache=cache, report=RunReport())
    path = lock_path(cache, cell.id)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    report = RunReport()
    with pytest.warns(StaleLockWarning, match="cannot be trusted"):
        prepared = prepare(cell, cache=cache, report=report)
    assert report.counts("solve") == {"done": 1}
    assert report.select("solve")[0].reason.startswith("lock untrusted")
    assert report.counts("install") == {"cached": 1}  # same records: the prefix is kept
    LockFile.from_path(prepared.lock_path)  # rewritten and readable

    path.write_text("version: 7\nenvironments: [\n")  # garbage that does not parse either
    report = RunReport()
    with pytest.warns(StaleLockWarning):
        prepare(cell, cache=cache, report=report)
    assert report.counts("solve") == {"done": 1}


def test_archive_that_does_not_match_the_lock_is_refused(make_cell, cache, tmp_path, channel_kit):
    Pkg = channel_kit.Pkg
    chan = channel_kit.build(
        tmp_path / "shachan", [Pkg("shapkg", "1.0", files={"share/a": "one\n"})]
    )
    cell = make_cell("sha", deps=["shapkg"], channels=(chan.as_uri(),))
    prepared = prepare(cell, cache=cache, report=RunReport())
    (record,) = prepared.records["test"]
    # rebuild the archive under the same file name, without re-indexing: the lock is now stale
    archive = channel_kit.assemble(
        chan, Pkg("shapkg", "1.0", files={"share/a": "two\n"}), tmp_path / "st"
    )
    shutil.rmtree(prepared.test_prefix)
    report = RunReport()
    with pytest.raises(InstallError) as info:
        prepare(cell, cache=cache, report=report)
    text = str(info.value)
    assert "shapkg" in text and str(archive) in text
    assert record.sha256.hex() in text
    assert (
        f"actual sha256:   {__import__('hashlib').sha256(archive.read_bytes()).hexdigest()}" in text
    )
    assert report.counts("install") == {"failed": 1}
    assert not (prepared.test_prefix / "conda-meta" / INSTALLED_MARKER).exists()


def test_reindexed_channel_is_seen_by_the_shared_gateway(make_cell, cache, tmp_path, channel_kit):
    Pkg = channel_kit.Pkg
    chan = channel_kit.build(tmp_path / "grow", [Pkg("grower", "1.0")])
    cell = make_cell("grow", deps=["grower"], channels=(chan.as_uri(),))
    assert _version_of(prepare(cell, cache=cache, report=RunReport()), "grower") == "1.0"
    channel_kit.build(chan, [Pkg("grower", "2.0")])
    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    assert report.select("solve")[0].reason == "inputs changed: channel contents"
    assert _version_of(prepared, "grower") == "2.0"


def test_activation_runs_scripts_and_expands_cell_env(make_cell, cache):
    cell = make_cell(
        "act",
        deps=["actpkg"],
        activation_env={"MY_DATA": "$CONDA_PREFIX/share", "MY_OTHER": "%MY_DATA%/x"},
    )
    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    prefix = str(prepared.test_prefix)
    env = prepared.env
    assert env["CONDA_PREFIX"] == prefix
    assert env["PATH"].split(":")[0] == f"{prefix}/bin"
    assert env["ACTPKG_HOME"] == f"{prefix}/share/actpkg"  # from etc/conda/activate.d
    assert env["MY_DATA"] == f"{prefix}/share" and env["MY_OTHER"] == f"{prefix}/share/x"
    assert report.counts("activate") == {"done": 1}
    again = RunReport()
    assert prepare(cell, cache=cache, report=again).env == env
    assert again.counts("activate") == {"cached": 1}


def test_foreign_platform_is_solved_but_not_installed(make_cell, cache, tmp_path, channel_kit):
    Pkg = channel_kit.Pkg
    chan = channel_kit.build(tmp_path / "osx", [Pkg("macthing", "1.0", "osx-arm64")])
    cell = make_cell("mac", deps=["macthing"], channels=(chan.as_uri(),), platform="osx-arm64")
    report = RunReport()
    prepared = prepare(cell, cache=cache, report=report)
    assert report.counts("solve") == {"done": 1} and report.counts("install") == {"skipped": 1}
    assert not prepared.installed and not prepared.test_prefix.exists()
