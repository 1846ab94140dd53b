"""``harness gc`` on real cells: a package built with the script backend over a local channel.

Every test prepares, builds and tests real cells (a fraction of a second each
on the synthetic channel), changes the sources as a user would (drops a
cell, edits a source file), and checks what gc removed, what it left, and
that the cells left still run warm.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from filelock import FileLock

from harness.build.driver import read_artifact
from harness.cache import Cache
from harness.cell import Cell
from harness.compile import compile_manifest
from harness.errors import HarnessError
from harness.gc import GcReport, bytecode_dir, collect_garbage, mark_used
from harness.manifest.read import load_manifest
from harness.pipeline import RunResult, run_cells

MANIFEST = """
[workspace]
channels = ["{channel}"]
platforms = ["linux-64"]
preview = ["pixi-build"]

[workspace.build-variants]
python = ["3.12.*", "3.13.*"]

[feature.py312.dependencies]
python = "3.12.*"
[feature.py313.dependencies]
python = "3.13.*"

[environments]
{environments}

[package]
name = "mypkg"
version = "1.0"
[package.build]
backend = {{ name = "harness-build-script", version = "*" }}
[package.build.config]
script = ["mkdir -p $PREFIX/share/mypkg", "cp $SRC_DIR/data.txt $PREFIX/share/mypkg/"]
[package.build-dependencies]
tool = "*"
[package.host-dependencies]
python = "*"
libfoo = "*"
[package.run-dependencies]
libbar = "*"

[dependencies]
mypkg = {{ path = "." }}

[tasks]
test = "test -f $CONDA_PREFIX/share/mypkg/data.txt"
"""

#: Environment -> features.  ``py312-twin`` has py312's variant, hence its variant key.
ENVIRONMENTS = {"py312": "py312", "py312-twin": "py312", "py313": "py313"}
DAY = 86400.0


class Workspace:
    """A project whose manifest defines the given cells; its cache root beside it."""

    def __init__(self, root: Path, channel: str) -> None:
        self.root = root
        self.channel = channel
        root.mkdir()
        (root / "data.txt").write_text("v1\n")

    @property
    def manifest(self) -> Path:
        return self.root / "pixi.toml"

    @property
    def cache(self) -> Cache:
        return Cache.for_manifest(self.manifest)

    def define(self, *names: str) -> list[Cell]:
        envs = "\n".join(f'{n} = ["{ENVIRONMENTS[n]}"]' for n in names)
        self.manifest.write_text(MANIFEST.format(channel=self.channel, environments=envs))
        return list(compile_manifest(load_manifest(self.manifest)).cells)

    def run(self, cells: Sequence[Cell]) -> RunResult:
        result = run_cells(cells, echo=False)
        assert not result.errors, dict(result.errors)
        assert all(o.ok for o in result.outcomes.values()), result.outcomes
        return result

    def ls(self, sub: str) -> set[str]:
        base = self.cache.root / sub
        return {p.name for p in base.iterdir()} if base.is_dir() else set()

    def tree(self) -> dict[str, tuple[int, int]]:
        """Every path under the cache root with its mtime and inode (to prove nothing changed)."""
        out: dict[str, tuple[int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.cache.root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.relpath(os.path.join(dirpath, name), self.cache.root)] = (
                    st.st_mtime_ns, st.st_ino)
        return out


@pytest.fixture
def ws(tmp_path: Path, main_channel: Path, pkgs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.setenv("HARNESS_PKGS_DIR", str(pkgs_dir))
    return Workspace(tmp_path / "proj", main_channel.as_uri())


def removed(report: GcReport, *, markers: bool = False) -> set[tuple[str, str]]:
    """What gc removed, without the "last used" markers that go with a cell or build (unless asked)."""
    (root,) = report.roots
    return {
        (r.kind, str(r.path.relative_to(root.root)))
        for r in root.removed
        if markers or r.kind not in ("marker", "bytecode")
    }


def cell_state(cell: str) -> set[tuple[str, str]]:
    """What a cell that ran its tests owns under the cache root."""
    return {("prefixes", f"envs/{cell}"), ("solve", f"solve/{cell}"), ("logs", f"logs/{cell}"),
            ("junit", f"reports/junit/{cell}.xml"), ("warm", f"warm/{cell}.json")}


def keys(ws: Workspace) -> set[str]:
    return ws.ls("build/mypkg")


def age(paths: Sequence[Path], days: float) -> None:
    then = time.time() - days * DAY
    for path in paths:
        os.utime(path, (then, then), follow_symlinks=False)


def test_a_dropped_cell_goes_and_the_others_stay_warm(ws: Workspace) -> None:
    first = ws.run(ws.define("py312", "py312-twin", "py313"))
    key313, art313 = key_of(first, "py313"), artifact_of(first, "py313")
    assert key_of(first, "py312") == key_of(first, "py312-twin") != key313
    assert keys(ws) == {key313, key_of(first, "py312")}
    assert len(ws.ls("artifacts/mypkg")) == 2

    # Bytecode that runs left under PYTHONPYCACHEPREFIX, mirroring each cell's prefixes.
    for cell in ("py313", "py312-twin"):
        pyc = bytecode_dir(ws.cache) / cell / "test" / "lib" / "__pycache__" / "m.cpython-312.pyc"
        pyc.parent.mkdir(parents=True)
        pyc.write_bytes(b"pyc")

    # py313 and py312 leave the matrix; py312-twin keeps the variant key py312 shared.
    cells = ws.define("py312-twin")
    report = collect_garbage(cells)
    gone = {r.path for r in report.removed if r.kind == "bytecode"}
    assert gone == {bytecode_dir(ws.cache) / "py313"}
    assert (bytecode_dir(ws.cache) / "py312-twin").is_dir() and not (bytecode_dir(ws.cache) / "py313").exists()
    assert removed(report) == cell_state("py313") | cell_state("py312") | {
        ("build", f"build/mypkg/{key313}"), ("artifact", f"artifacts/mypkg/{art313}")}
    reasons = {r.kind: r.reason for r in report.removed if r.cell == "py313" or r.key == key313}
    assert reasons["prefixes"] == "cell py313 is not in the sources"
    assert reasons["build"] == reasons["artifact"] == "no cell of the sources has this variant key"
    assert report.freed > 0 and report.size >= report.freed
    assert ws.ls("envs") == ws.ls("solve") == {"py312-twin"}
    assert keys(ws) == {key_of(first, "py312-twin")}
    assert {p.name for p in ws.cache.locks_dir.iterdir()} >= {"cell-py313.lock", "cell-py312.lock"}

    again = ws.run(cells)
    assert again.report.counts("solve")["done"] == 0
    assert again.report.counts("install")["done"] == 0
    assert dict(again.report.counts("build")) == {"cached": 1}
    assert removed(collect_garbage(cells)) == set()


def artifact_of(result: RunResult, cell: str) -> str:
    """``<key>-<fingerprint>``: the artifact the run's build stage of ``cell`` names."""
    (stage,) = result.report.select("build", cell=cell)
    return stage.reason.rsplit("(", 1)[1].rstrip(")")


def key_of(result: RunResult, cell: str) -> str:
    return artifact_of(result, cell).split("-")[0]


def test_an_artifact_of_old_sources_goes_the_current_one_stays(ws: Workspace) -> None:
    cells = ws.define("py312")
    ws.run(cells)
    (old,) = ws.ls("artifacts/mypkg")
    (ws.root / "data.txt").write_text("v2\n")
    assert dict(ws.run(cells).report.counts("build")) == {"done": 1}
    (current,) = ws.ls("artifacts/mypkg") - {old}

    report = collect_garbage(cells)
    assert removed(report) == {("artifact", f"artifacts/mypkg/{old}")}
    assert report.removed[0].reason == "built from older sources"
    assert ws.ls("artifacts/mypkg") == {current}
    assert len(keys(ws)) == 1  # the build directory of the key stays (incremental builds)
    again = ws.run(cells)
    assert dict(again.report.counts("build")) == {"cached": 1}
    assert again.report.counts("install")["done"] == 0


def test_a_running_cell_and_a_running_build_are_not_touched(ws: Workspace) -> None:
    first = ws.run(ws.define("py312", "py313"))
    key313 = key_of(first, "py313")
    cells = ws.define("py312")
    cache = ws.cache

    # py313 runs (its lock is held by another lock object, as another process would).
    with FileLock(cache.locks_dir / "cell-py313.lock"):
        report = collect_garbage(cells)
    assert removed(report) == set()
    (root,) = report.roots
    assert [u.what for u in root.in_use] == ["cell py313"]
    assert "sources do not define it" in root.kept["mypkg"]
    assert {"py312", "py313"} == ws.ls("envs") == ws.ls("solve")

    # The cell has finished, but a build of its variant key runs.
    key_file = cache.key_lock(f"build:mypkg:{key313}").lock_file
    with FileLock(key_file):
        report = collect_garbage(cells)
    assert removed(report) == cell_state("py313")
    (root,) = report.roots
    assert [u.what for u in root.in_use] == [f"build mypkg {key313}"]
    assert key313 in keys(ws)

    report = collect_garbage(cells)
    assert {kind for kind, _ in removed(report)} == {"build", "artifact"}
    assert keys(ws) == {key_of(first, "py312")}


def test_a_cell_of_the_sources_that_runs_keeps_its_variant_key(ws: Workspace) -> None:
    cells = ws.define("py312")
    ws.run(cells)
    (old,) = ws.ls("artifacts/mypkg")
    (ws.root / "data.txt").write_text("v2\n")
    ws.run(cells)
    with FileLock(ws.cache.locks_dir / "cell-py312.lock"):
        report = collect_garbage(cells)
    assert removed(report) == set()
    assert [u.reason for u in report.roots[0].in_use] == [
        "cell py312 is running and uses this variant key"]
    assert old in ws.ls("artifacts/mypkg")


def test_dry_run_removes_nothing_and_lists_what_gc_removes(ws: Workspace) -> None:
    ws.run(ws.define("py312", "py313"))
    cells = ws.define("py312")
    before = ws.tree()
    dry = collect_garbage(cells, dry_run=True)
    assert ws.tree() == before  # not even a lock file was created
    real = collect_garbage(cells)
    assert removed(dry) == removed(real) and len(removed(real)) == 7
    assert (dry.size, dry.freed) == (real.size, real.freed)


def test_older_than_removes_used_entries_nobody_used_for_that_long(ws: Workspace) -> None:
    cells = ws.define("py312", "py313")
    first = ws.run(cells)
    key313 = key_of(first, "py313")
    cache = ws.cache
    (new_report,) = cache.reports_dir.glob("run-*.json")
    old_report = cache.reports_dir / "run-20200101T000000-1.json"
    old_report.write_text(new_report.read_text())
    art313 = cache.artifacts_dir / "mypkg" / artifact_of(first, "py313")
    stale = [cache.root / sub for _kind, sub in cell_state("py313")]
    stale += [cache.root / "used" / "cells" / "py313", cache.root / "used" / "builds" / "mypkg" / key313]
    age([*stale, cache.build_dir / "mypkg" / key313, art313, old_report], 10)

    report = collect_garbage(cells, older_than_days=5)
    assert removed(report) == cell_state("py313") | {
        ("build", f"build/mypkg/{key313}"),
        ("artifact", f"artifacts/mypkg/{art313.name}"),
        ("report", f"reports/{old_report.name}")}
    assert all(r.reason.endswith(("more than 5 days ago", "run report older than 5 days"))
               for r in report.removed)
    assert ws.ls("envs") == {"py312"} and new_report.exists()

    # A run marks what it used: py312 and its build are fresh again although their
    # files are old, and marking changed no mtime of the entries themselves.
    art312 = cache.artifacts_dir / "mypkg" / artifact_of(first, "py312")
    build312 = cache.build_dir / "mypkg" / key_of(first, "py312")
    age([*(cache.root / sub for _kind, sub in cell_state("py312")), art312, build312], 10)
    before = ws.tree()
    mark_used(cache, "py312", read_artifact(art312))
    after = ws.tree()
    entries = [p for p in before if not p.startswith("used")]  # the markers are what marking changes
    assert {p: after[p] for p in entries} == {p: before[p] for p in entries}
    assert removed(collect_garbage(cells, older_than_days=5)) == set()

    # 0 days: everything gc may remove goes, the cache root's own layout stays.
    report = collect_garbage(cells, older_than_days=0)
    assert cell_state("py312") | {("marker", "used/cells/py312"),
                                  ("marker", f"used/builds/mypkg/{key_of(first, 'py312')}"),
                                  ("build", f"build/mypkg/{build312.name}"),
                                  ("artifact", f"artifacts/mypkg/{art312.name}")} <= removed(
        report, markers=True)
    assert ws.ls("envs") == ws.ls("build/mypkg") == ws.ls("artifacts/mypkg") == set()
    assert {"locks", "envs", "build", "artifacts", "reports", "solve"} <= ws.ls(".")
    assert {p.name for p in cache.locks_dir.iterdir()} >= {"cell-py312.lock", "cell-py313.lock"}


def test_an_untrusted_lock_keeps_every_build_of_its_package(ws: Workspace) -> None:
    ws.run(ws.define("py312", "py313"))
    cells = ws.define("py312")
    lock = ws.cache.solve_dir("py312") / "pixi.lock"
    lock.write_text(lock.read_text() + "# edited\n")
    report = collect_garbage(cells)
    assert removed(report) == cell_state("py313")  # the dropped cell's own state still goes
    assert len(keys(ws)) == 2 and len(ws.ls("artifacts/mypkg")) == 2
    why = report.roots[0].kept["mypkg"]
    assert why.startswith("cell py312: its lock file cannot be trusted")


def test_nothing_outside_the_root_is_touched(ws: Workspace, tmp_path: Path) -> None:
    cells = ws.define("py312")
    cache = ws.cache.ensure()
    outside = tmp_path / "outside"
    (outside / "pkg" / "0123456789abcdef-0123456789abcdef").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me\n")
    # A dropped cell's prefix with a link out of the root, and a dropped cell that *is* a link.
    prefix = cache.envs_dir / "gone" / "test"
    prefix.mkdir(parents=True)
    (prefix / "escape").symlink_to(outside)
    (prefix / "file").write_text("x\n")
    (cache.envs_dir / "gone-link").symlink_to(outside)
    # A package directory that leads out of the root.
    (cache.artifacts_dir / "evil").symlink_to(outside / "pkg")

    report = collect_garbage(cells)
    assert removed(report) == {("prefixes", "envs/gone"), ("prefixes", "envs/gone-link")}
    assert not os.path.lexists(cache.envs_dir / "gone-link")
    assert (outside / "precious.txt").read_text() == "keep me\n"
    assert (outside / "pkg" / "0123456789abcdef-0123456789abcdef").is_dir()
    (problem,) = report.roots[0].problems
    assert problem.startswith("artifacts/evil/0123456789abcdef-0123456789abcdef: its directory is outside")


def test_a_root_that_is_not_a_harness_cache_is_refused(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = ws.define("py312")
    elsewhere = tmp_path / "home"
    for sub in ("envs", "build", "artifacts"):
        (elsewhere / sub / "x").mkdir(parents=True)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(elsewhere))
    with pytest.raises(HarnessError, match="does not look like a harness cache"):
        collect_garbage(cells)
    (elsewhere / ".gitignore").write_text("*\n")
    with pytest.raises(HarnessError, match="locks/, reports/, solve/ missing"):
        collect_garbage(cells)
    assert (elsewhere / "envs" / "x").is_dir()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "never-created"))
    (root,) = collect_garbage(cells).roots
    assert not root.exists and not (tmp_path / "never-created").exists()


def test_the_command_line_reports_in_text_and_json(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    import harness.gc  # noqa: F401  (registers the command)
    from harness.cli import run

    ws.run(ws.define("py312", "py313"))
    ws.define("py312")
    assert run(["gc", str(ws.manifest), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["would", "remove", "prefixes", "envs/py313"] in [line[:4] for line in lines]
    assert out.splitlines()[-1].startswith("would free ")
    assert ws.ls("envs") == {"py312", "py313"}

    assert run(["gc", str(ws.manifest), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is False and data["freed_bytes"] > 0
    (root,) = data["roots"]
    assert {r["relative"] for r in root["removed"]} >= {"envs/py313", "solve/py313"}
    assert ws.ls("envs") == {"py312"}

    with pytest.raises(SystemExit) as exit_info:
        run(["gc", str(ws.manifest), "--older-than", "-1"])
    assert exit_info.value.code == 2
    assert "expected a number of days >= 0" in capsys.readouterr().err


def test_the_warm_snapshots_of_removed_cells_go_with_them(
    ws: Workspace, warm_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import marshal

    import harness.gc  # noqa: F401  (registers the command)
    from harness import warmstart
    from harness.cli import run

    ws.define("py312", "py313")
    for cell in ("py312", "py313"):
        assert run(["test", "--from", str(ws.manifest), cell, "-q"]) == 0
    capsys.readouterr()
    by_cell = {marshal.loads(p.read_bytes())["cells"][0]["cell"]: p for p in warm_index.glob("*.warm")}
    assert set(by_cell) == {"py312", "py313"}
    # Another Python's (or a damaged) snapshot is not this interpreter's to judge; an
    # interrupted write goes once it is clearly abandoned, a recent one stays.
    foreign = warm_index / f"{'f' * 16}.warm"
    foreign.write_bytes(b"\xff not marshal")
    abandoned, recent = warm_index / ".x.warm.tmp-41", warm_index / ".y.warm.tmp-42"
    for path in (abandoned, recent):
        path.write_bytes(b"partial")
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))

    # nox's cached session listings: one whose input changed is never read again, the other is.
    from harness import warm

    for name in ("kept", "edited"):
        (ws.root / f"{name}.txt").write_text(name)
        noted = {str(ws.root / f"{name}.txt"): warmstart.stat_entry(ws.root / f"{name}.txt")}
        warm.store_cached("nox", name, [name], noted, time.time_ns() + 10**10)
    assert warm.load_cached("nox", "edited") == ["edited"]
    (ws.root / "edited.txt").write_text("edited, longer")
    assert warm.load_cached("nox", "edited") is None and warm.load_cached("nox", "kept") == ["kept"]
    listings = {name: next(p for p in warm_index.glob("nox-*.json") if name in p.read_text())
                for name in ("kept", "edited")}

    cells = ws.define("py312")
    before = sorted(p.name for p in warm_index.iterdir())
    dry = collect_garbage(cells, dry_run=True)
    assert dry.warm_index is not None and sorted(p.name for p in warm_index.iterdir()) == before
    report = collect_garbage(cells)
    assert report.warm_index is not None and report.warm_index.root == warm_index
    gone = {(r.kind, r.path.name) for r in report.warm_index.removed}
    assert gone == {(r.kind, r.path.name) for r in dry.warm_index.removed}
    assert gone == {("snapshot", by_cell["py313"].name), ("temporary", abandoned.name),
                    ("listing", listings["edited"].name)}
    (why,) = [r.reason for r in report.warm_index.removed if r.kind == "snapshot"]
    assert "py313" in why and "is gone" in why
    assert sorted(p.name for p in warm_index.iterdir()) == sorted(
        [by_cell["py312"].name, foreign.name, recent.name, listings["kept"].name])
    assert warm.load_cached("nox", "kept") == ["kept"]
    # The kept cell's snapshot stays whole (the manifest it read changed: its next run replaces it).
    snapshot = marshal.loads(by_cell["py312"].read_bytes())
    assert warmstart.read_snapshot(snapshot["material"]) == snapshot
    assert warmstart.stale(snapshot) == f"{ws.manifest} changed"

    # A deleted project takes its snapshots' records with it: the next gc of any project prunes them.
    shutil.rmtree(ws.cache.root / "warm")
    assert run(["gc", str(ws.manifest)]) == 0
    out = capsys.readouterr().out
    assert f"warm-start index {warm_index}" in out and "py312" in out
    assert sorted(p.name for p in warm_index.iterdir()) == sorted(
        [foreign.name, recent.name, listings["kept"].name])
