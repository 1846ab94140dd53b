"""The warm start's proof of "nothing changed": stat snapshots of trees, env, and the plain summary."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from harness import inputs, warm, warmstart
from harness.summary import SummaryRow, render_plain, render_summary

PAST_NS = 1_000_000_000 * 1_600_000_000  # 2020: older than any write the test makes

names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
trees = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map(lambda parts: "/".join(parts)),
    st.binary(min_size=0, max_size=40),
    min_size=1,
    max_size=12,
)
MUTATIONS = (
    "rewrite same size", "append", "truncate", "delete", "new sibling", "new subdir file",
    "mkdir", "rename", "chmod +x", "symlink instead", "replace (new inode)", "rmdir",
)


def make_tree(root: Path, files: dict[str, bytes]) -> list[Path]:
    made: list[Path] = []
    for rel, data in files.items():
        path = root / rel
        if any(p.is_file() for p in [*path.parents][: len(Path(rel).parts) - 1]) or path.is_dir():
            continue  # a prefix of another path is a file: skip the clash
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made.append(path)
    for dirpath, dirnames, filenames in os.walk(root):  # everything old: writes below are "later"
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), ns=(PAST_NS, PAST_NS))
    os.utime(root, ns=(PAST_NS, PAST_NS))
    return made


def mutate(root: Path, files: list[Path], how: str, pick: int) -> None:
    target = files[pick % len(files)]
    if how == "rewrite same size":
        data = target.read_bytes()
        target.write_bytes(bytes((b + 1) % 256 for b in data) if data else b"")
        if not data:
            target.write_bytes(b"x")
    elif how == "append":
        with target.open("ab") as handle:
            handle.write(b"!")
    elif how == "truncate":
        target.write_bytes(b"")
        if not target.stat().st_size:
            with target.open("ab") as handle:  # it was empty: emptying it is no change
                handle.write(b"y")
    elif how == "delete":
        target.unlink()
    elif how == "new sibling":
        (target.parent / "zz_new.py").write_text("new\n")
    elif how == "new subdir file":
        (target.parent / "zz_dir").mkdir()
        (target.parent / "zz_dir" / "f").write_text("x")
    elif how == "mkdir":
        (root / "zz_empty").mkdir()
    elif how == "rename":
        target.rename(target.with_name(target.name + "_renamed"))
    elif how == "chmod +x":
        target.chmod(target.stat().st_mode | 0o111)
    elif how == "symlink instead":
        target.unlink()
        target.symlink_to(root / "elsewhere")
    elif how == "replace (new inode)":
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(target.read_bytes())
        os.utime(tmp, ns=(target.stat().st_mtime_ns, target.stat().st_mtime_ns))
        os.replace(tmp, target)
    elif how == "rmdir":
        for path in files:
            path.unlink()
        for dirpath, _dirnames, _files in sorted(os.walk(root), reverse=True):
            if Path(dirpath) != root:
                os.rmdir(dirpath)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=trees, how=st.sampled_from(MUTATIONS), pick=st.integers(min_value=0, max_value=100))
def test_any_change_to_a_tree_is_seen(tmp_path_factory: pytest.TempPathFactory, files, how, pick) -> None:
    root = tmp_path_factory.mktemp("tree")
    made = make_tree(root, files)
    entries = warm.tree_entries(root)
    assert warmstart.changed(entries, None) is None  # nothing changed yet: the snapshot reproduces
    mutate(root, made, how, pick)
    assert warmstart.changed(entries, None) is not None, how


def test_prefixes_and_cache_roots_in_the_tree_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x")
    cache = tmp_path / ".harness"
    (cache / "envs" / "c" / "test").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    entries = warm.tree_entries(tmp_path)
    assert str(tmp_path / "src" / "m.py") in entries
    assert not any(p.startswith(str(cache) + os.sep + "envs") for p in entries)
    (cache / "reports").mkdir()  # what every run writes does not invalidate the record
    assert warmstart.changed(entries, None) is None


def test_a_source_tree_inside_a_checkout_watches_what_git_lists_by(tmp_path: Path) -> None:
    """The fingerprint asks git: the checkout's index and ignore files above the tree count too."""
    import subprocess

    top = tmp_path / "repo"
    src = top / "pkgs" / "mine"
    src.mkdir(parents=True)
    (src / "m.py").write_text("x")
    (src / "data.bin").write_text("ignored for now")
    (top / ".gitignore").write_text("*.bin\n")
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=top, check=True, capture_output=True)
    entries = warm.tree_entries(src)
    assert str(top / ".git" / "index") in entries and str(top / ".gitignore") in entries
    assert warmstart.changed(entries, None) is None
    (top / ".gitignore").write_text("")  # data.bin is now listed: the fingerprint changes
    assert warmstart.changed(entries, None) == f"{top / '.gitignore'} changed"
    entries = warm.tree_entries(src)
    subprocess.run(["git", "add", "-f", "pkgs/mine/data.bin"], cwd=top, check=True, capture_output=True)
    assert warmstart.changed(entries, None) == f"{top / '.git' / 'index'} changed"


def test_a_record_edited_by_hand_is_not_replayed() -> None:
    assert warmstart.check_record({"format": warmstart.FORMAT, "cell": 3}) == "record unreadable"
    assert warmstart.check_record({"format": warmstart.FORMAT, "cell": "c", "cache_root": "/x", "taken_ns": 1,
                              "inputs": {}, "outputs": {}, "env": {}, "roles": {}, "plan": {},
                              "stages": [], "extra_env": {}, "activation_env": {}}) == "record unreadable"
    assert warmstart.check_record(None) == "no record"


def test_racy_entries_are_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warmstart.RACY_ENV, raising=False)
    path = tmp_path / "f"
    path.write_text("x")
    entries = {str(path): inputs.stat_entry(path)}
    now = path.stat().st_ctime_ns
    assert "just before" in (warmstart.changed(entries, now) or "")
    assert warmstart.changed(entries, now + warmstart.RACY_NS + 1_000_000_000) is None


def test_watched_environment() -> None:
    env = {"PATH": "/bin", "HARNESS_X": "1", "CONDA_OVERRIDE_CUDA": "13", "TERM": "xterm", "MY_FLAG": "a"}
    watched = warmstart.watched_env(env, ["MY_FLAG", "UNSET"])
    assert watched == {"CONDA_OVERRIDE_CUDA": "13", "HARNESS_X": "1", "MY_FLAG": "a", "PATH": "/bin", "UNSET": None}
    assert warmstart.watched_env({**env, "TERM": "dumb"}, ["MY_FLAG", "UNSET"]) == watched
    assert warmstart.watched_env({**env, "MY_FLAG": "b"}, ["MY_FLAG", "UNSET"]) != watched


def test_invocations_are_keyed_by_what_was_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = warm.Invocation(("m.toml",), ("py312-*",), "skip").material()
    assert a == warm.Invocation((str(tmp_path / "m.toml"),), ("py312-*",), "skip").material()
    assert a != warm.Invocation(("m.toml",), ("py313-*",), "skip").material()
    assert a != warm.Invocation(("m.toml",), ("py312-*",), "require").material()
    assert a != warm.Invocation(("m.toml",), ("py312-*", "x"), "skip").material()
    assert warmstart.key(a) != warmstart.key(a + " ")
    assert warmstart.parse(["test", "--update", "x"]) is None
    assert warmstart.parse(["test", "--repair", "x"]) is None
    assert warmstart.parse(["test"]) is None
    args, extra = warmstart.parse(["test", "--from", "m.toml", "x", "-q", "--", "-k", "y"])  # type: ignore[misc]
    assert (args.sources, args.cells, args.quiet, extra) == (["m.toml"], ["x"], True, ["-k", "y"])


ROWS = [
    SummaryRow("py312-cu13", "passed", 6, 0, 0, 7, 0, 1, 0.52),
    SummaryRow("py313-cu13-release", "failed", 5, 2, 0, 3, 2, 0, 75.0, "",
               ("tests/test_a.py::test_x", "tests/test_a.py::test_y")),
    SummaryRow("py314-cu13", "skipped", 0, 0, 0, 0, 0, 0, 0.0, "no CPython 3.14 on this machine"),
    SummaryRow("py310-cu12", "error", 1, 0, 1, 0, 0, 0, 1.0, "build failed\nsee the log"),
]


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS], ids=["one", "mixed"])
def test_the_plain_summary_reads_as_the_rich_one(rows: list[SummaryRow]) -> None:
    rich_out = io.StringIO()
    render_summary(rows, Console(file=rich_out, width=200, color_system=None))
    plain_out = io.StringIO()
    render_plain(rows, plain_out)
    strip = [line.rstrip() for line in rich_out.getvalue().splitlines()]
    assert [line.rstrip() for line in plain_out.getvalue().splitlines()] == strip
