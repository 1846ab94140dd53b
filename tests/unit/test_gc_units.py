"""gc's pieces that need no cells: sizes and hard links, safe deletion, leftovers, the root check."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from harness.cache import Cache, atomic_write_text
from harness.errors import HarnessError
from harness.gc import (
    TEMPORARY_AGE,
    TRASH_PREFIX,
    RootReport,
    _days,
    _Tally,
    _temporary_files,
    check_root,
    delete,
    gc_root,
    measure,
)


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_hard_links_count_once_and_free_only_when_every_link_goes(tmp_path: Path) -> None:
    shared = tmp_path / "pkgs" / "lib.so"  # the package cache's copy
    shared.parent.mkdir()
    shared.write_bytes(b"x" * 100_000)
    prefix = tmp_path / "envs" / "a"
    prefix.mkdir(parents=True)
    os.link(shared, prefix / "lib.so")
    os.link(shared, prefix / "lib-again.so")  # twice in one entry: counted once
    own = prefix / "own.txt"
    own.write_bytes(b"y" * 50_000)

    tally = _Tally()
    size = tally.add(measure(prefix))
    assert size == blocks(prefix) + blocks(shared) + blocks(own)
    # The package cache still links lib.so: removing the prefix frees the rest only.
    assert tally.freed == blocks(prefix) + blocks(own)
    # A second entry with the same inode adds no size; the last link makes it freed.
    assert tally.add(measure(shared)) == 0
    assert tally.freed == size


def test_delete_never_follows_links_and_empties_read_only_directories(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep\n")
    entry = tmp_path / "root" / "envs" / "gone"
    (entry / "sub").mkdir(parents=True)
    (entry / "sub" / "file").write_text("x\n")
    (entry / "link").symlink_to(outside)
    (entry / "sub").chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only, as some packages ship
    link_entry = tmp_path / "root" / "envs" / "is-a-link"
    link_entry.symlink_to(outside)

    delete(entry)
    delete(link_entry)
    assert os.listdir(tmp_path / "root" / "envs") == []
    assert (outside / "precious").read_text() == "keep\n"


def test_a_directory_is_renamed_aside_before_it_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = tmp_path / "build" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "obj.o").write_text("x\n")
    seen: list[str] = []

    def interrupted(path: Path) -> None:
        seen.extend(os.listdir(tmp_path / "build"))
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.gc._rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        delete(entry)
    # Killed while deleting: the entry's own name is gone, only trash is left for later.
    (trash,) = seen
    assert trash.startswith(f"{TRASH_PREFIX}{os.getpid()}-") and trash.endswith("-0123456789abcdef")
    assert os.listdir(tmp_path / "build") == [trash]


def test_trash_of_a_finished_gc_is_removed_and_a_running_gcs_is_left(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache").ensure()
    done = subprocess.Popen(["true"])
    done.wait()
    dead = cache.envs_dir / f"{TRASH_PREFIX}{done.pid}-0-old"
    alive = cache.build_dir / "pkg" / f"{TRASH_PREFIX}{os.getppid()}-0-0123456789abcdef"
    for path in (dead, alive):
        (path / "bin").mkdir(parents=True)
    report = gc_root(cache, [])
    assert [(r.kind, r.path, r.reason) for r in report.removed] == [
        ("leftover", dead, "left by an interrupted gc")]
    assert alive.is_dir() and not dead.exists()


def test_temporary_files_of_killed_writes_go_once_no_write_can_own_them(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache").ensure()
    prefix_meta = cache.envs_dir / "py312" / "test" / "conda-meta"
    in_cells = [  # found in a cell's state (which gc removes as a whole when the cell is gone)
        cache.root / "solve" / "py312" / f".pixi.lock.tmp-{os.getpid() + 1}",  # lock.write_lock
        prefix_meta / ".harness-activation.ab12cd34.tmp",  # activation cache
    ]
    loose = [
        cache.reports_dir / "junit" / ".py312.xml.4242.partial",  # run.write_junit
        cache.root / "warm" / ".py312.json.k3x_9q2a.tmp",  # cache.atomic_write_text
        cache.root / ".CACHEDIR.TAG.0a1b2c3d.tmp",
    ]
    kept = [cache.root / "solve" / "py312" / "pixi.lock", prefix_meta / "harness-activation",
            cache.root / "warm" / ".hidden-but-not-temporary", cache.root / "warm" / "x.tmp"]
    for path in [*in_cells, *loose, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half a file")
    assert sorted(_temporary_files(cache)) == sorted([*in_cells, *loose])

    def temporary(report: RootReport) -> list[Path]:
        return sorted(r.path for r in report.removed if r.kind == "temporary")

    assert temporary(gc_root(cache, [], dry_run=True, now=time.time())) == []  # a write may own them
    later = time.time() + TEMPORARY_AGE + 1
    assert temporary(gc_root(cache, [], dry_run=True, now=later)) == sorted(loose)
    assert all(path.exists() for path in loose)  # a dry run only says so
    report = gc_root(cache, [], now=later)
    assert temporary(report) == sorted(loose)
    assert {r.reason for r in report.removed if r.kind == "temporary"} == {
        "a temporary file that an interrupted run left"}
    assert not any(path.exists() for path in loose)
    assert (cache.root / "warm" / "x.tmp").exists() and (cache.root / "warm" / ".hidden-but-not-temporary").exists()


def test_the_temporary_names_gc_knows_are_the_ones_atomic_writes_use(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from harness.gc import _TEMPORARY

    made: list[str] = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        fd, name = real(*args, **kwargs)
        made.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    atomic_write_text(tmp_path / "inputs.json", "{}")
    assert made and all(_TEMPORARY.match(name) for name in made)


def test_a_run_report_goes_only_with_older_than(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache").ensure()
    report_file = cache.reports_dir / "run-20200101T000000-1.json"
    report_file.write_text("{}\n")
    assert gc_root(cache, []).removed == ()
    assert gc_root(cache, [], older_than_days=1).removed == ()  # written just now
    (gone,) = gc_root(cache, [], older_than_days=0).removed
    assert (gone.kind, gone.path) == ("report", report_file) and not report_file.exists()


def test_root_check(tmp_path: Path) -> None:
    assert check_root(tmp_path / "missing") is False
    only_channel = tmp_path / "channel-only"
    (only_channel / "channels" / "offline").mkdir(parents=True)
    (only_channel / ".gitignore").write_text("*\n")
    assert check_root(only_channel) is False
    assert check_root(Cache(tmp_path / "cache").ensure().root) is True
    with pytest.raises(HarnessError, match=r"no \.gitignore ignoring `\*`") as info:
        check_root(tmp_path)  # holds cache/ etc. but is not a cache itself
    assert info.value.file == tmp_path and "HARNESS_CACHE_DIR" in (info.value.hint or "")
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(HarnessError, match="not a directory"):
        check_root(a_file)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_older_than_rejects_what_is_not_a_number_of_days(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="number of days >= 0"):
        _days(text)


def test_older_than_accepts_fractions_of_days() -> None:
    assert _days("0") == 0.0 and _days("1.5") == 1.5
