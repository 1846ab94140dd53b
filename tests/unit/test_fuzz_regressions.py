"""Inputs that once escaped as tracebacks, hung, or went where they should not: each is a user error now.

Found by fuzzing the readers (tests/unit/test_fuzz_inputs.py); each test here
is the smallest input that showed the problem.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from harness.channels import resolve_channel
from harness.cli import run
from harness.errors import ChannelError, HarnessError
from harness.loader import compile_sources, find_cells
from harness.matrix.expand import combinations
from harness.matrix.read import MAX_CELLS, load_matrix
from harness.tomlfile import MAX_TOML_BYTES

WORKSPACE = '[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n'
PACKAGE = (
    '[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\npreview = ["pixi-build"]\n'
    '[dependencies]\npkg = { path = "." }\n'
    '[package]\nname = "pkg"\nversion = "1.0"\n'
    '[package.build]\nbackend = { name = "harness-build-script", version = "*" }\n'
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*sources: Path) -> HarnessError:
    with pytest.raises(HarnessError) as info:
        compile_sources(list(sources))
    assert str(info.value.file) in str(info.value)
    return info.value


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(argv))
    return code, out.getvalue(), err.getvalue()


# -- reading files ------------------------------------------------------------------------------


def test_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pixi.toml"
    os.mkfifo(fifo)
    error = error_of(fifo)
    assert error.file == fifo and "not a regular file" in error.message


def test_a_device_is_refused_instead_of_read_forever() -> None:
    error = error_of(Path("/dev/zero"))
    assert "not a regular file" in error.message


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    big = write(tmp_path / "pixi.toml", WORKSPACE + "#" * MAX_TOML_BYTES)
    error = error_of(big)
    assert error.file == big and "refused" in error.message


def test_toml_nested_past_the_parser_s_limit_is_a_syntax_error(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pixi.toml", WORKSPACE + "x = " + "[" * 1000 + "]" * 1000 + "\n")
    error = error_of(manifest)
    assert error.message.startswith("invalid TOML") and error.file == manifest


def test_a_symlink_loop_as_the_matrix_s_manifest(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    matrix = write(tmp_path / "m.toml", 'manifest = "loop"\n')
    error = error_of(matrix)
    assert error.file == matrix and error.key == "manifest"


def test_a_symlink_loop_as_a_source(tmp_path: Path) -> None:
    (tmp_path / "pixi.toml").symlink_to("pixi.toml")
    error = error_of(tmp_path / "pixi.toml")
    assert "cannot read the file" in error.message


def test_a_directory_named_like_a_matrix_file_is_not_compiled_as_one(tmp_path: Path) -> None:
    """``matrices/up.toml -> ..`` made a directory source recurse into itself."""
    project = tmp_path / "proj"
    write(project / "ws" / "pixi.toml", WORKSPACE)
    write(project / "matrices" / "m.toml", 'manifest = "../ws/pixi.toml"\nname = "c{a}"\n[axes]\na = ["1"]\n')
    (project / "matrices" / "up.toml").symlink_to("..")
    assert [c.id for c in compile_sources([project]).cells] == ["c1"]


# -- manifests ----------------------------------------------------------------------------------


def test_tool_pixi_that_is_not_a_table(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pyproject.toml", "[tool]\npixi = 1\n")
    error = error_of(manifest)
    assert error.key == "tool.pixi" and "expected a table" in error.message


def test_a_parent_pyproject_whose_tool_is_not_a_table(tmp_path: Path) -> None:
    """A package-only manifest looks for its workspace in parent directories."""
    write(tmp_path / "pyproject.toml", "tool = 1\n")
    child = write(tmp_path / "pkg" / "pixi.toml",
                  '[package]\nname = "pkg"\nversion = "1"\n'
                  '[package.build]\nbackend = { name = "harness-build-script", version = "*" }\n')
    assert [c.id for c in compile_sources([child]).cells] == ["default"]


@pytest.mark.parametrize("name", ["../../x", "x/y", "..", "", "a b"])
def test_a_package_name_that_could_leave_the_build_directory(tmp_path: Path, name: str) -> None:
    manifest = write(tmp_path / "pixi.toml", PACKAGE.replace('name = "pkg"', f'name = "{name}"'))
    error = error_of(manifest)
    assert error.key == "package.name" and "not a valid package name" in error.message


def test_a_workspace_name_used_as_the_package_name_is_checked_too(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pixi.toml",
                     PACKAGE.replace('name = "pkg"\n', "").replace("[workspace]\n", '[workspace]\nname = "a/b"\n'))
    error = error_of(manifest)
    assert error.key == "workspace.name" and "'a/b'" in error.message


@pytest.mark.parametrize(
    ("line", "key", "needle"),
    [
        ('"../x" = "*"', 'dependencies."../x"', "not a valid package name"),
        ('x = { version = ">=1", build = "[[[" }', "dependencies.x", "not a valid MatchSpec"),
        ('x = ">=<1"', "dependencies.x", "invalid version spec"),
    ],
)
def test_dependencies_the_solver_could_not_read(tmp_path: Path, line: str, key: str, needle: str) -> None:
    error = error_of(write(tmp_path / "pixi.toml", f"{WORKSPACE}[dependencies]\n{line}\n"))
    assert error.key == key and needle in error.message


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[pypi-dependencies]\nx = { version = 1979-05-27 }\n', "pypi-dependencies.x.version"),
        ("[package.build.config]\nenv = { A = 1979-05-27 }\n", "package.build.config.env.A"),
        ("[profiles.dev.backends.harness-build-script]\nx = 07:32:00\n", "profiles.dev.backends.harness-build-script.x"),
    ],
)
def test_dates_in_configuration_are_refused_where_written(tmp_path: Path, table: str, key: str) -> None:
    """They reached the variant key's JSON (a TypeError) and ``harness list --json``."""
    manifest = write(tmp_path / "pixi.toml", PACKAGE + table)
    error = error_of(manifest)
    assert error.key == key and "date" in error.message
    code, _, err = cli("list", str(manifest), "--json")
    assert code == 2 and "Traceback" not in err


@pytest.mark.parametrize("channel", ["", " ", "a\\u0000b"])
def test_an_empty_or_control_character_channel(tmp_path: Path, channel: str) -> None:
    error = error_of(write(tmp_path / "pixi.toml", WORKSPACE.replace('"conda-forge"', f'"{channel}"')))
    assert error.key == "workspace.channels"


def test_a_channel_under_an_unknown_user_s_home(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="home directory"):
        resolve_channel("~no-such-user-here/channel", tmp_path, manifest=tmp_path / "pixi.toml")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[system-requirements]\ncuda = "x y"\n', "system-requirements.cuda"),
        ('[feature.f.system-requirements]\nlibc = { family = 1, version = "2.17" }\n', "feature.f.system-requirements.libc"),
    ],
)
def test_system_requirements_that_are_not_versions(tmp_path: Path, table: str, key: str) -> None:
    """``__cuda=x y`` reached the solver's virtual-package parser."""
    error = error_of(write(tmp_path / "pixi.toml", WORKSPACE + table))
    assert error.key == key


def test_a_rich_platform_s_cuda_that_is_not_a_version(tmp_path: Path) -> None:
    text = WORKSPACE.replace('["linux-64"]', '[{ name = "gpu", platform = "linux-64", cuda = "12 x" }]')
    error = error_of(write(tmp_path / "pixi.toml", text))
    assert error.key == "workspace.platforms" and "not a version" in error.message


@pytest.mark.parametrize("name", ["A=B", "", "BASH_ENV"])
def test_activation_variables_that_cannot_be_set_safely(tmp_path: Path, name: str) -> None:
    error = error_of(write(tmp_path / "pixi.toml", f'{WORKSPACE}[activation.env]\n"{name}" = "x"\n'))
    assert error.key is not None and error.key.startswith("activation.env")


def test_an_activation_value_with_a_nul(tmp_path: Path) -> None:
    error = error_of(write(tmp_path / "pixi.toml", f'{WORKSPACE}[activation.env]\nX = "a\\u0000b"\n'))
    assert error.key == "activation.env.X" and "NUL" in error.message


@pytest.mark.parametrize("condition", ["(" * 2000 + "linux" + ")" * 2000, "not " * 5000 + "linux"])
def test_a_condition_nested_too_deep(tmp_path: Path, condition: str) -> None:
    """The recursive condition parser overflowed the stack (RecursionError)."""
    error = error_of(write(tmp_path / "pixi.toml", f'{WORKSPACE}[target."if({condition})".dependencies]\na = "*"\n'))
    assert error.key is not None and error.key.startswith("target.") and "deep" in error.message


@pytest.mark.parametrize(
    ("task", "key"),
    [("test = { cmd = [1, 2] }", "tasks.test.cmd"), ("test = 1979-05-27", "tasks.test"), ("test = 1", "tasks.test")],
)
def test_a_test_task_that_is_not_a_command(tmp_path: Path, task: str, key: str) -> None:
    error = error_of(write(tmp_path / "pixi.toml", f"{WORKSPACE}[tasks]\n{task}\n"))
    assert error.key == key


def test_a_test_task_given_as_a_list_or_a_dependency_only_task(tmp_path: Path) -> None:
    listed = write(tmp_path / "a" / "pixi.toml", f'{WORKSPACE}[tasks]\ntest = {{ cmd = ["pytest", "-q"] }}\n')
    assert compile_sources([listed]).cells[0].test_command == "pytest -q"
    alias = write(tmp_path / "b" / "pixi.toml", f'{WORKSPACE}[tasks]\nlint = "x"\ntest = {{ depends-on = ["lint"] }}\n')
    # pixi runs the dependency: a task with only `depends-on` runs its chain, the last task last
    assert compile_sources([alias]).cells[0].test_command == "x"


# -- matrix files -------------------------------------------------------------------------------


def matrix_file(tmp_path: Path, body: str, manifest: str = WORKSPACE) -> Path:
    write(tmp_path / "pixi.toml", manifest)
    return write(tmp_path / "m.toml", 'manifest = "pixi.toml"\n' + body)


def test_includes_count_toward_the_cell_limit(tmp_path: Path) -> None:
    """A one-value axis plus 10^5 includes was not limited (and deduplicated quadratically)."""
    includes = ", ".join(f'{{ a = "x{i}" }}' for i in range(MAX_CELLS))
    error = error_of(matrix_file(tmp_path, f"include = [{includes}]\n[axes]\na = [\"1\"]\n"))
    assert error.key == "axes" and f"up to {MAX_CELLS + 1} cells" in error.message


def test_many_excludes_and_includes_expand_in_one_pass(tmp_path: Path) -> None:
    """20,000 excludes over 10,000 combinations were matched pairwise: five minutes, now a fraction of a second."""
    values = ", ".join(f'"{i}"' for i in range(100))
    excludes = ", ".join(f'{{ a = "{i}", b = "x{i}" }}' for i in range(20_000))  # none matches
    includes = ", ".join(f'{{ a = "{i % 99 + 1}", b = "{i % 100}" }}' for i in range(5_000))  # all already there
    matrix = load_matrix(matrix_file(
        tmp_path, f"exclude = [{excludes}, {{ a = \"0\" }}]\ninclude = [{includes}]\n[axes]\na = [{values}]\nb = [{values}]\n"
    ))
    combos = combinations(matrix)
    assert len(combos) == 100 * 100 - 100
    assert {"a": "0", "b": "5"} not in combos and {"a": "1", "b": "5"} in combos


def test_a_new_include_value_fills_the_template_not_the_first_value_s_text(tmp_path: Path) -> None:
    """The first value's text was replaced wherever it occurred: ``>=1.1`` became ``>=3.3``."""
    matrix = matrix_file(tmp_path, 'include = [{ a = "3" }]\n[axes.a]\nvalues = ["1"]\n'
                                   'dependencies = { python = "{value}.*", libfoo = ">=1.1" }\n')
    cells = {c.id: c for c in compile_sources([matrix]).cells}
    deps = {d.name: d.version for d in cells["a3"].dependencies}
    assert deps == {"python": "3.*", "libfoo": ">=1.1"}


def test_a_new_include_value_when_the_first_value_is_empty(tmp_path: Path) -> None:
    """``"".replace`` put the new value between every character of the template."""
    matrix = matrix_file(tmp_path, 'name = "c{a}"\ninclude = [{ a = "9" }]\n[axes.a]\nvalues = ["", "1"]\n'
                                   'label = "x{label}"\nenv = { V = "v{value}" }\n')
    cells = {c.id: c for c in compile_sources([matrix]).cells}
    assert cells["c9"].activation_env["V"] == "v9"


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ('dependencies = { python = ">=<{value}" }', "axes.a.dependencies.python"),
        ('dependencies = { "../x" = "*" }', 'axes.a.dependencies."../x"'),
        ('system-requirements = { cuda = "{value} x" }', "axes.a.system-requirements.cuda"),
        ('env = { "A=B" = "1" }', 'axes.a.env."A=B"'),
        ('env = { X = "a\\u0000b" }', "axes.a.env.X"),
    ],
)
def test_axis_mappings_are_checked_when_the_matrix_compiles(tmp_path: Path, mapping: str, key: str) -> None:
    error = error_of(matrix_file(tmp_path, f'[axes.a]\nvalues = ["1"]\n{mapping}\n'))
    assert error.key == key and error.line is not None


def test_ids_that_differ_only_in_case_are_one_directory_on_some_file_systems(tmp_path: Path) -> None:
    matrix = matrix_file(tmp_path, 'name = "c{a}"\n[axes]\na = ["A", "a"]\n')
    error = error_of(matrix)
    assert error.key == "name" and "case" in error.message


def test_the_same_cell_from_two_sources_names_both_and_a_file(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pixi.toml", WORKSPACE + '[environments]\nc1 = []\n')
    matrix = write(tmp_path / "m.toml", 'manifest = "pixi.toml"\nname = "c{a}"\n[axes]\na = ["1"]\n')
    error = error_of(manifest, matrix)
    assert error.file is not None and "c1" in error.message
    assert [c.id for c in compile_sources([matrix, matrix]).cells] == ["c1"]  # one source twice: once


def test_a_cell_that_is_not_there_names_the_source(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pixi.toml", WORKSPACE)
    with pytest.raises(HarnessError) as info:
        find_cells(["nope"], [manifest])
    assert info.value.file == manifest and str(manifest) in str(info.value)


def test_overlapping_globs_give_each_cell_once_in_the_order_asked(tmp_path: Path) -> None:
    """(Deduplicating by id, not by comparing every cell with every cell found so far.)"""
    values = ", ".join(f'"{i}"' for i in range(60))
    matrix = matrix_file(tmp_path, f'name = "c{{a}}-{{b}}"\n[axes]\na = [{values}]\nb = [{values}]\n')
    found = [c.id for c in find_cells(["c1-*", "*", "c1-1"], [matrix])]
    assert len(found) == len(set(found)) == 3600
    assert found[:60] == [f"c1-{i}" for i in range(60)]
