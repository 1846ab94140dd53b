"""No command in configuration runs, except ``$(nproc)`` (which the harness itself expands).

Every configuration string that reaches a build or a test environment gets
shell tricks: ``$(touch MARKER)``, backquotes, ``${X:-$(touch MARKER)}``,
``$((1+1))`` and a nested ``$( $(nproc) )``.  The builds and the test command
run for real (a script-backend package built by the build driver, a CMake
project configured by the CMake backend, the test command started by
``run_tests`` in the activated environment), and MARKER must never exist
afterwards.  Each trick is either refused with an error naming the manifest
(or matrix) and the key, or arrives as the literal text.

The test command itself (``tasks.test``, a matrix's ``test``) is different:
it is a shell command the user writes on purpose, as a pixi task is, and
``$(...)`` in it runs (see the last tests).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rattler.package_streaming import extract

from harness.activation import activation_env
from harness.build.driver import BuildInputs, build_package
from harness.build.expand import expand_config, expand_env_table, expand_text
from harness.cache import Cache
from harness.cell import Cell
from harness.errors import BuildError, HarnessError
from harness.launch import test_argv
from harness.loader import compile_sources
from harness.run import run_tests

#: Tricks the harness must refuse where it expands configuration (they look like expansions).
REFUSED = ("$(touch {m})", "${{X:-$(touch {m})}}", "$((1+1))", "$( $(nproc) )")
#: Tricks that are plain text to the harness: they must arrive literally and never run.
LITERAL = ("`touch {m}`",)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file a trick would create; the working directory is a scratch one, too."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "MARKER"


def payloads(kind: tuple[str, ...], marker: Path) -> list[str]:
    return [p.format(m=marker) for p in kind]


def toml_str(text: str) -> str:
    return "'" + text + "'"  # a TOML literal string: the tricks hold no single quote


def write_package(root: Path, config: str, *, backend: str = "harness-build-script", extra: str = "") -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    manifest = root / "src" / "pixi.toml"
    manifest.write_text(
        "[workspace]\n"
        'channels = ["conda-forge"]\nplatforms = ["linux-64"]\npreview = ["pixi-build"]\n'
        '[dependencies]\npkg = { path = "." }\n'
        '[package]\nname = "pkg"\nversion = "1.0"\n'
        f'[package.build]\nbackend = {{ name = "{backend}", version = "*" }}\n'
        f"[package.build.config]\n{config}\n{extra}",
        encoding="utf-8",
    )
    return manifest


def build(root: Path, manifest: Path):  # type: ignore[no-untyped-def]
    """Build the manifest's one cell through the build driver (no prefixes: system tools)."""
    (cell,) = compile_sources([manifest]).cells
    cache = Cache(root=root / "cache")
    artifact, built = build_package(cell, cache, BuildInputs(None, None, (), ()))
    assert built
    return artifact


def staged(artifact, relative: str) -> str:  # type: ignore[no-untyped-def]
    """A file the build installed, read back from the package it was packed into."""
    unpacked = artifact.directory.with_name(f"{artifact.directory.name}-unpacked")
    if not unpacked.exists():
        extract(artifact.archive, unpacked)
    return (unpacked / relative).read_text(encoding="utf-8")


SCRIPT = (
    'script = ["mkdir -p $PREFIX/share", '
    '"printf %s \\"$X\\" > $PREFIX/share/x.txt", '
    '"printf %s \\"$(echo from-bash)\\" > $PREFIX/share/own.txt"]'
)


# -- package.build.config.env -----------------------------------------------------------


@pytest.mark.parametrize("trick", REFUSED)
def test_a_substitution_in_the_build_env_is_refused_naming_the_key(tmp_path: Path, marker: Path, trick: str) -> None:
    (value,) = payloads((trick,), marker)
    manifest = write_package(tmp_path, f"{SCRIPT}\nenv = {{ X = {toml_str(value)} }}")
    with pytest.raises(BuildError) as info:
        build(tmp_path, manifest)
    assert info.value.file == manifest.resolve() and str(manifest.resolve()) in str(info.value)
    assert info.value.key == "package.build.config.env.X"
    assert "not supported" in info.value.message
    assert not marker.exists()


def test_backquotes_in_the_build_env_reach_the_script_as_text(tmp_path: Path, marker: Path) -> None:
    (value,) = payloads(LITERAL, marker)
    manifest = write_package(tmp_path, f"{SCRIPT}\nenv = {{ X = {toml_str(value)} }}")
    artifact = build(tmp_path, manifest)
    assert staged(artifact, "share/x.txt") == value  # the script's "$X" is the text, not its output
    assert not marker.exists()


def test_the_build_script_is_bash_s_to_expand_not_the_harness_s(tmp_path: Path, marker: Path) -> None:
    """``script`` is a program: bash expands ``$X`` and runs ``$(...)`` in it, as conda-build does.

    Were the harness to expand the script first, a variable's value would be
    spliced into the program's text and run (the backquotes above).
    """
    manifest = write_package(tmp_path, f"{SCRIPT}\nenv = {{ X = 'plain' }}")
    artifact = build(tmp_path, manifest)
    assert staged(artifact, "share/own.txt") == "from-bash"
    assert staged(artifact, "share/x.txt") == "plain"
    assert not marker.exists()


@pytest.mark.parametrize("name", ["BASH_ENV", "BASH_FUNC_printf%%", "PS4", "SHELLOPTS"])
def test_variables_bash_runs_code_from_are_refused_in_the_build_env(tmp_path: Path, marker: Path, name: str) -> None:
    (value,) = payloads(LITERAL, marker)
    value = f"() {{ {value}; }}" if name.startswith("BASH_FUNC") else value
    manifest = write_package(tmp_path, f'{SCRIPT}\nenv = {{ "{name}" = {toml_str(value)} }}')
    with pytest.raises(BuildError) as info:
        build(tmp_path, manifest)
    assert info.value.file == manifest.resolve()
    assert info.value.key is not None and name in info.value.key and name in info.value.message
    assert not marker.exists()


def test_a_profile_s_build_env_is_checked_like_the_package_s(tmp_path: Path, marker: Path) -> None:
    (value,) = payloads(REFUSED[:1], marker)
    manifest = write_package(
        tmp_path, SCRIPT,
        extra=f'[profiles.dev.backends.harness-build-script]\nenv = {{ X = {toml_str(value)} }}\n',
    )
    with pytest.raises(BuildError) as info:
        build(tmp_path, manifest)
    assert info.value.file == manifest.resolve() and info.value.key == "package.build.config.env.X"
    assert not marker.exists()


# -- package.build.config.extra-args (CMake) ----------------------------------------------------


@pytest.mark.parametrize("trick", REFUSED)
def test_a_substitution_in_extra_args_is_refused_naming_the_key(tmp_path: Path, marker: Path, trick: str) -> None:
    (value,) = payloads((trick,), marker)
    manifest = write_package(tmp_path, f"extra-args = [{toml_str('-DX=' + value)}]", backend="pixi-build-cmake")
    with pytest.raises(BuildError) as info:
        build(tmp_path, manifest)
    assert info.value.file == manifest.resolve() and info.value.key == "package.build.config.extra-args[0]"
    assert not marker.exists()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_backquotes_in_extra_args_reach_cmake_as_one_literal_argument(tmp_path: Path, marker: Path) -> None:
    (value,) = payloads(LITERAL, marker)
    manifest = write_package(tmp_path, f"extra-args = [{toml_str('-DX=' + value)}]", backend="pixi-build-cmake")
    (tmp_path / "src" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.10)\nproject(pkg NONE)\n"
        'file(WRITE "${CMAKE_BINARY_DIR}/x.txt" "${X}")\n'
        'install(FILES "${CMAKE_BINARY_DIR}/x.txt" DESTINATION share)\n'
    )
    artifact = build(tmp_path, manifest)
    assert staged(artifact, "share/x.txt") == value
    assert not marker.exists()


# -- activation env and matrix env, through to the test command ---------------------------------------


def run_in_cell(tmp_path: Path, cell: Cell, command: str) -> str:
    """Run ``command`` the way a cell's tests run: in its activated environment, from its root."""
    prefix = tmp_path / "prefix"  # a prefix without activation scripts: no shell needed to activate
    (prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
    env, _ = activation_env(prefix, records_hash="0", extra=dict(cell.activation_env))
    outcome = run_tests(cell.id, command, env=env, cwd=cell.root, junit_path=tmp_path / "junit.xml", echo=False)
    assert outcome.returncode == 0, outcome
    return (cell.root / "out.txt").read_text(encoding="utf-8")


def cell_of(source: Path, environment: str = "default") -> Cell:
    return next(c for c in compile_sources([source]).cells if c.environment == environment)


WORKSPACE = '[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n'
ECHO_X = 'printf %s "$X" > out.txt'


@pytest.mark.parametrize(
    ("table", "environment"),
    [("activation.env", "default"), ("feature.f.activation.env", "e"), ("target.linux.activation.env", "default")],
)
@pytest.mark.parametrize("trick", REFUSED + LITERAL)
def test_activation_env_values_reach_the_tests_as_text(
    tmp_path: Path, marker: Path, table: str, environment: str, trick: str
) -> None:
    (value,) = payloads((trick,), marker)
    manifest = tmp_path / "pixi.toml"
    manifest.write_text(f'{WORKSPACE}[environments]\ndefault = []\ne = ["f"]\n[feature.f]\n[{table}]\nX = {toml_str(value)}\n')
    cell = cell_of(manifest, environment)
    assert cell.activation_env["X"] == value
    assert run_in_cell(tmp_path, cell, ECHO_X) == value
    assert not marker.exists()


@pytest.mark.parametrize("trick", REFUSED + LITERAL)
def test_matrix_env_values_reach_the_tests_as_text(tmp_path: Path, marker: Path, trick: str) -> None:
    (value,) = payloads((trick,), marker)
    (tmp_path / "pixi.toml").write_text(WORKSPACE, encoding="utf-8")
    matrix = tmp_path / "m.toml"
    matrix.write_text(
        f'manifest = "pixi.toml"\nname = "c{{a}}"\n[axes.a]\nvalues = ["1"]\nenv = {{ X = {toml_str(value)} }}\n',
        encoding="utf-8",
    )
    assert run_in_cell(tmp_path, cell_of(matrix), ECHO_X) == value
    assert not marker.exists()


@pytest.mark.parametrize("name", ["BASH_ENV", "BASH_FUNC_printf%%", "PS4", "SHELLOPTS"])
def test_variables_bash_runs_code_from_are_refused_in_activation_and_matrix_env(
    tmp_path: Path, marker: Path, name: str
) -> None:
    (value,) = payloads(LITERAL, marker)
    manifest = tmp_path / "pixi.toml"
    manifest.write_text(f'{WORKSPACE}[activation.env]\n"{name}" = {toml_str(value)}\n', encoding="utf-8")
    with pytest.raises(HarnessError) as info:
        compile_sources([manifest])
    assert info.value.file == manifest.resolve()
    assert info.value.key is not None and info.value.key.startswith("activation.env.") and name in info.value.key
    manifest.write_text(WORKSPACE, encoding="utf-8")
    matrix = tmp_path / "m.toml"
    matrix.write_text(f'manifest = "pixi.toml"\n[axes.a]\nvalues = ["1"]\nenv = {{ "{name}" = {toml_str(value)} }}\n')
    with pytest.raises(HarnessError) as info:
        compile_sources([matrix])
    assert info.value.file == matrix.resolve()
    assert info.value.key is not None and info.value.key.startswith("axes.a.env.") and name in info.value.key
    assert not marker.exists()


# -- the expansion itself --------------------------------------------------------------------------


@pytest.mark.parametrize("trick", REFUSED)
def test_expansion_refuses_every_substitution_but_nproc(tmp_path: Path, marker: Path, trick: str) -> None:
    (value,) = payloads((trick,), marker)
    for call in (
        lambda: expand_text(value, {}, key="package.build.config.x", manifest=tmp_path / "pixi.toml"),
        lambda: expand_config({"x": [value]}, {}, manifest=tmp_path / "pixi.toml"),
        lambda: expand_env_table({"X": value}, {}, manifest=tmp_path / "pixi.toml"),
    ):
        with pytest.raises(BuildError) as info:
            call()
        assert str(tmp_path / "pixi.toml") in str(info.value) and "package.build.config" in str(info.value)
    assert not marker.exists()


def test_expansion_is_one_pass_and_leaves_backquotes_alone(marker: Path) -> None:
    env = {"X": f"$(touch {marker})", "Y": "$X"}
    assert expand_text("$X ${Y} %X% $(nproc) `id` $$(id)", env, key="k", nproc=3) == (
        f"$(touch {marker}) $X $(touch {marker}) 3 `id` $(id)"
    )
    # the script backend's program is left to bash (the harness never splices values into it)
    assert expand_config("$(id) $X", env, key=("package", "build", "config", "script")) == "$(id) $X"
    assert expand_config("$X", env, key=("package", "build", "config", "extra-args")) == f"$(touch {marker})"
    assert not marker.exists()


# -- the test command: a shell command on purpose -------------------------------------------------------


def test_the_test_command_is_a_shell_command_and_its_substitutions_run(tmp_path: Path) -> None:
    """``tasks.test`` runs as a pixi task does, through a shell when it uses shell syntax."""
    manifest = tmp_path / "pixi.toml"
    manifest.write_text(f'''{WORKSPACE}[tasks]\ntest = 'printf %s "$(echo ran)" > out.txt'\n''', encoding="utf-8")
    cell = cell_of(manifest)
    assert cell.test_command is not None and test_argv(cell.test_command, [])[:2] == ["bash", "-c"]
    assert run_in_cell(tmp_path, cell, cell.test_command) == "ran"


def test_a_test_command_without_shell_syntax_runs_without_a_shell() -> None:
    assert test_argv("python -m pytest -q", ["-k", "x"]) == ["python", "-m", "pytest", "-q", "-k", "x"]
