"""Shared bytecode: mirrored ``.pyc`` files become hard links, and every prefix still loads its own code.

The bytecode is written by a real interpreter (this one) with
``PYTHONPYCACHEPREFIX``, as a test command writes it, and checked by importing
again: ``python -v`` says whether a ``.pyc`` "matches" its source (loaded
without compiling) and tracebacks name the file a module was loaded from.
"""

from __future__ import annotations

import marshal
import os
import py_compile
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.bytecode import (
    ShareStats,
    _replace_with_link,
    interpreter_dirs,
    mirror_dir,
    share_bytecode,
    timestamp_header_matches,
)
from harness.cache import Cache
from harness.gc import SHARED_PYC, GcReport, bytecode_dir, gc_root, render_report

TAG = sys.implementation.cache_tag
OLD = 1_577_836_800  # 2020-01-01, as package caches normalise mtimes


def python_env(pycache: Path, path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "SOURCE_DATE_EPOCH", "PYTHONPATH")}
    env.update(PYTHONPYCACHEPREFIX=str(pycache), PYTHONPATH=str(path))
    return env


def py(code: str, pycache: Path, path: Path, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``path`` first on ``sys.path`` and bytecode under ``pycache``."""
    return subprocess.run([sys.executable, *flags, "-c", code], env=python_env(pycache, path),
                          capture_output=True, text=True, check=check)


def write(path: Path, text: str, mtime: int = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def pyc_of(pycache: Path, source: Path) -> Path:
    return mirror_dir(pycache, source.parent) / f"{source.stem}.{TAG}.pyc"


def inode(path: Path) -> int:
    return path.stat().st_ino


MODULE = "VALUE = {value!r}\n\ndef boom():\n    raise ValueError('boom')\n"


@pytest.fixture
def two_prefixes(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Prefixes A and B whose ``m.py`` is one package-cache file, each with its own bytecode."""
    original = write(tmp_path / "pkgs" / "m.py", MODULE.format(value="one"))
    a, b = tmp_path / "A", tmp_path / "B"
    for prefix in (a, b):
        prefix.mkdir()
        os.link(original, prefix / "m.py")
    pycache = tmp_path / "pycache"
    for prefix in (a, b):
        py("import m", pycache, prefix)
    return a, b, pycache, tmp_path / "store"


def test_two_prefixes_share_one_file_and_load_it_without_compiling(two_prefixes) -> None:
    a, b, pycache, store = two_prefixes
    pa, pb = pyc_of(pycache, a / "m.py"), pyc_of(pycache, b / "m.py")
    assert inode(pa) != inode(pb) and pa.stat().st_nlink == pb.stat().st_nlink == 1

    stats = share_bytecode(pycache, [a, b], store)
    assert stats == ShareStats(examined=2, already=0, shipped=0, stored=1, added=1,
                               freed=stats.freed)
    assert stats.freed > 0
    (entry,) = store.rglob("*.pyc")
    assert entry.parent.name == TAG
    assert inode(pa) == inode(pb) == inode(entry) and entry.stat().st_nlink == 3

    before = pb.stat()
    run = py("import m; m.boom()", pycache, b, "-v", check=False)
    assert f"# {pb} matches {b / 'm.py'}" in run.stderr
    assert f'File "{b / "m.py"}", line 4, in boom' in run.stderr
    after = pb.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    again = share_bytecode(pycache, [a, b], store)  # a re-run: one stat per file, nothing to do
    assert (again.examined, again.already, again.linked) == (2, 2, 0)


def test_a_source_changed_in_one_prefix_gets_its_own_bytecode_there_only(two_prefixes) -> None:
    a, b, pycache, store = two_prefixes
    share_bytecode(pycache, [a, b], store)
    pa, pb = pyc_of(pycache, a / "m.py"), pyc_of(pycache, b / "m.py")
    (entry,) = store.rglob("*.pyc")
    shared, shared_bytes = inode(entry), entry.read_bytes()

    (b / "m.py").unlink()  # a new file, as an editor or a reinstall writes it
    write(b / "m.py", MODULE.format(value="two!"), mtime=OLD + 3600)
    assert py("import m; print(m.VALUE)", pycache, b).stdout == "two!\n"
    assert inode(pb) != shared and timestamp_header_matches(pb.read_bytes(), (b / "m.py").stat())
    assert inode(pa) == inode(entry) == shared and entry.read_bytes() == shared_bytes
    run = py("import m; print(m.VALUE)", pycache, a, "-v")
    assert run.stdout == "one\n" and f"# {pa} matches {a / 'm.py'}" in run.stderr

    stats = share_bytecode(pycache, [a, b], store)
    assert (stats.already, stats.added) == (1, 1)
    assert len(list(store.rglob("*.pyc"))) == 2 and inode(pa) == shared != inode(pb)
    assert py("import m; print(m.VALUE)", pycache, b).stdout == "two!\n"


def test_bytecode_of_a_source_changed_just_before_it_was_compiled_is_not_shared(
    two_prefixes,
) -> None:
    """The header keeps whole seconds: a source rewritten in the same second could still match it."""
    a, b, pycache, store = two_prefixes
    for prefix in (a, b):
        os.utime(prefix / "m.py")  # now: the bytecode below is written less than 2 s later
        py("import m", pycache, prefix)
    stats = share_bytecode(pycache, [a, b], store)
    assert (stats.examined, stats.linked) == (2, 0) and not list(store.rglob("*.pyc"))


def shipped_and_mirrored(tmp_path: Path, shipped_from: str) -> tuple[Path, Path, Path, Path]:
    """A directory with ``__pycache__`` bytecode of ``shipped_from`` beside ``m.py``, and ours."""
    lib = tmp_path / "lib"
    source = write(lib / "m.py", shipped_from)
    shipped = lib / "__pycache__" / f"m.{TAG}.pyc"
    py_compile.compile(str(source), cfile=str(shipped), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    write(source, MODULE.format(value="one"))
    pycache = tmp_path / "pycache"
    py("import m", pycache, lib)
    return lib, shipped, pyc_of(pycache, source), pycache


def test_the_bytecode_shipped_beside_the_source_is_linked(tmp_path: Path) -> None:
    lib, shipped, ours, pycache = shipped_and_mirrored(tmp_path, MODULE.format(value="one"))
    assert shipped.read_bytes() == ours.read_bytes() and inode(shipped) != inode(ours)
    stats = share_bytecode(pycache, [lib], tmp_path / "store")
    assert (stats.shipped, stats.added, stats.stored) == (1, 0, 0)
    assert inode(ours) == inode(shipped) and not (tmp_path / "store").exists()
    run = py("import m; print(m.VALUE)", pycache, lib, "-v")
    assert run.stdout == "one\n" and f"# {ours} matches {lib / 'm.py'}" in run.stderr


def test_shipped_bytecode_compiled_apart_is_linked_once_its_source_had_settled(
    tmp_path: Path,
) -> None:
    """Older interpreters' ``marshal`` output differs between compilations: the same code, other bytes."""
    lib, shipped, ours, pycache = shipped_and_mirrored(tmp_path, MODULE.format(value="one"))
    code = compile(MODULE.format(value="one"), str(lib / "m.py"), "exec")
    shipped.write_bytes(ours.read_bytes()[:16] + marshal.dumps(code, 2))
    os.utime(shipped, (OLD + 3600, OLD + 3600))
    assert shipped.read_bytes() != ours.read_bytes()
    stats = share_bytecode(pycache, [lib], tmp_path / "store")
    assert (stats.shipped, stats.added) == (1, 0) and inode(ours) == inode(shipped)
    run = py("import m; print(m.VALUE)", pycache, lib, "-v")
    assert run.stdout == "one\n" and f"# {ours} matches {lib / 'm.py'}" in run.stderr


@pytest.mark.parametrize("case", ["stale header", "other code written as its source changed"])
def test_shipped_bytecode_that_may_not_be_ours_is_not_used(tmp_path: Path, case: str) -> None:
    if case == "stale header":  # compiled from an older version of the source
        lib, shipped, ours, pycache = shipped_and_mirrored(tmp_path, "VALUE = 'older'\n")
    else:  # a header that validates, over other code, written within the source's second
        lib, shipped, ours, pycache = shipped_and_mirrored(tmp_path, MODULE.format(value="one"))
        body = marshal.dumps(compile(MODULE.format(value="eno"), str(lib / "m.py"), "exec"))
        shipped.write_bytes(ours.read_bytes()[:16] + body)
        os.utime(shipped, (OLD + 1, OLD + 1))
    stats = share_bytecode(pycache, [lib], tmp_path / "store")
    assert (stats.shipped, stats.added) == (0, 1)
    assert inode(ours) != inode(shipped)
    assert py("import m; print(m.VALUE)", pycache, lib).stdout == "one\n"


def test_what_cannot_be_proved_is_left_alone(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write(lib / "keep.py", "VALUE = 1\n")
    write(lib / "hashed.py", "VALUE = 2\n")
    write(lib / "gone.py", "VALUE = 3\n")
    pycache = tmp_path / "pycache"
    py("import keep, gone", pycache, lib)
    mirror = mirror_dir(pycache, lib)
    py_compile.compile(str(lib / "hashed.py"), cfile=str(mirror / f"hashed.{TAG}.pyc"),
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH, doraise=True)
    (lib / "gone.py").unlink()
    kept = mirror / f"keep.{TAG}.pyc"
    rewritten = mirror / f"keep.{TAG}-pytest-8.3.4.pyc"  # pytest's own rewritten modules
    rewritten.write_bytes(kept.read_bytes())
    os.link(kept, tmp_path / "elsewhere.pyc")  # already linked: skipped after one stat
    stats = share_bytecode(pycache, [lib], tmp_path / "store")
    assert (stats.examined, stats.already, stats.linked) == (4, 1, 0)
    assert not (tmp_path / "store").exists()


def test_a_directory_reached_through_a_link_out_of_the_source_is_left_alone(tmp_path: Path) -> None:
    """Bytecode of files that lie outside the given tree (say, the package's own sources)."""
    outside = tmp_path / "project"
    write(outside / "mod.py", "VALUE = 1\n")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "linked").symlink_to(outside)
    pycache = tmp_path / "pycache"
    py("import mod", pycache, prefix / "linked")
    stats = share_bytecode(pycache, [prefix], tmp_path / "store")
    assert (stats.examined, stats.linked) == (1, 0)


def test_errors_leave_files_as_they_are(tmp_path: Path, two_prefixes) -> None:
    a, b, pycache, _store = two_prefixes
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("")
    stats = share_bytecode(pycache, [a, b, tmp_path / "missing"], blocked)
    assert stats.linked == 0 and stats.examined == 2
    assert pyc_of(pycache, a / "m.py").stat().st_nlink == 1


def test_a_store_on_another_file_system_stops_at_the_first_file(two_prefixes) -> None:
    a, b, pycache, _store = two_prefixes
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == pycache.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        stats = share_bytecode(pycache, [a, b], Path(other) / "store")
        assert (stats.examined, stats.linked) == (1, 0)
        assert not list(Path(other).rglob("*.pyc"))
    assert pyc_of(pycache, a / "m.py").stat().st_nlink == 1


def test_temporary_links_never_stay_behind(two_prefixes) -> None:
    a, _b, pycache, store = two_prefixes
    pa = pyc_of(pycache, a / "m.py")
    os.link(pa, store.parent / "shared.pyc")
    _replace_with_link(store.parent / "shared.pyc", pa)  # already a link of it: rename() is a no-op
    assert sorted(p.name for p in pa.parent.iterdir()) == [pa.name]

    done = subprocess.Popen(["true"])
    done.wait()
    dead = pa.with_name(f".{pa.name}.share-{done.pid}-0.tmp")  # left by a killed process
    busy = pa.with_name(f".{pa.name}.share-{os.getppid()}-0.tmp")  # a running one's
    for tmp in (dead, busy):
        os.link(pa, tmp)
    share_bytecode(pycache, [a], store)
    assert not dead.exists() and busy.exists()


def test_the_interpreters_of_venv_prefixes(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "pyvenv.cfg").write_text("home = /opt/py/3.12/bin\ninclude-system-site-packages = false\n")
    assert interpreter_dirs([prefix, prefix, tmp_path / "no-cfg"]) == (Path("/opt/py/3.12/lib"),)


# -- property: sharing never makes a prefix load another source's bytecode -----------------

NAMES = ("alpha", "beta", "gamma")
# Every source has the same size and mtime (as a package cache normalises them): the
# header alone cannot tell them apart.
VARIANTS = tuple(f"VALUE = 'v{n}'\n" for n in range(4))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(
    st.dictionaries(st.sampled_from(NAMES), st.tuples(st.sampled_from(range(len(VARIANTS))),
                                                      st.booleans()), min_size=1),
    min_size=2, max_size=3,
))
def test_each_prefix_keeps_loading_its_own_sources(
    tmp_path_factory: pytest.TempPathFactory, layout: list[dict[str, tuple[int, bool]]]
) -> None:
    """``layout[i][name] = (variant, shared)``: shared sources are links of one package file."""
    base = tmp_path_factory.mktemp("prop")
    package = {v: write(base / "pkgs" / f"{v}.py", text) for v, text in enumerate(VARIANTS)}
    pycache, prefixes = base / "pycache", []
    for i, modules in enumerate(layout):
        prefix = base / f"p{i}"
        prefix.mkdir()
        for name, (variant, shared) in modules.items():
            if shared:
                os.link(package[variant], prefix / f"{name}.py")
            else:
                write(prefix / f"{name}.py", VARIANTS[variant])
        py(f"import {', '.join(modules)}", pycache, prefix)
        prefixes.append(prefix)

    share_bytecode(pycache, prefixes, base / "store")

    for prefix, modules in zip(prefixes, layout, strict=True):
        for name in modules:
            pyc = pyc_of(pycache, prefix / f"{name}.py")
            assert timestamp_header_matches(pyc.read_bytes(), (prefix / f"{name}.py").stat())
        names = sorted(modules)
        run = py(f"import {', '.join(names)}; print({', '.join(f'{n}.VALUE' for n in names)})",
                 pycache, prefix)
        assert run.stdout.split() == [f"v{modules[n][0]}" for n in names]


# -- gc --------------------------------------------------------------------------------------


def stored_pyc(cache: Cache, name: str) -> Path:
    entry = cache.bytecode_store / TAG / f"{name}.pyc"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(b"\x00" * 5000)
    return entry


def link(entry: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.link(entry, at)


def test_gc_removes_store_entries_no_bytecode_links(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache").ensure()
    orphan = stored_pyc(cache, "orphan")
    kept = stored_pyc(cache, "kept")  # linked by an interpreter's mirrored standard library
    link(kept, cache.root / "pycache" / "opt" / "py" / "lib" / f"os.{TAG}.pyc")
    dropped = stored_pyc(cache, "dropped")  # linked only by a cell that leaves the sources
    link(dropped, bytecode_dir(cache) / "gone" / "test" / "lib" / f"m.{TAG}.pyc")

    dry = gc_root(cache, [], dry_run=True)
    assert {r.path for r in dry.removed if r.kind == SHARED_PYC} == {orphan, dropped}
    assert orphan.exists() and dropped.stat().st_nlink == 2

    report = gc_root(cache, [])
    assert {(r.path, r.reason) for r in report.removed if r.kind == SHARED_PYC} == {
        (orphan, "no prefix's bytecode links it any more"),
        (dropped, "no prefix's bytecode links it any more")}
    assert kept.exists() and not orphan.exists() and not dropped.exists()
    assert report.freed == dry.freed >= 2 * 5000
    text = render_report(GcReport(roots=(report,), dry_run=False))
    (line,) = [t for t in text.splitlines() if SHARED_PYC in t]
    assert "bytecode" in line and "2 files no prefix's bytecode links any more" in line
    assert gc_root(cache, []).removed == ()
