"""The ``harness-build-script`` backend: a bash script that installs into ``$PREFIX``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _native_fixtures import make_context, snapshot, write_tree

from harness.build.backends import get_backend
from harness.build.backends.script import ScriptBackend
from harness.errors import BuildError

REPORT_VARS = [
    "mkdir -p $PREFIX/share/vars",
    "for v in PREFIX HOST_PREFIX BUILD_PREFIX SRC_DIR BUILD_DIR PYTHON CPU_COUNT; do",
    '  printf "%s=%s\\n" "$v" "${!v}" >> "$PREFIX/share/vars/env.txt"',
    "done",
    'pwd > "$PREFIX/share/vars/cwd.txt"',
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", {"tool.sh": "#!/bin/sh\necho tool says hi\n"})


def test_registered_as_harness_build_script() -> None:
    backend = get_backend("harness-build-script")
    assert isinstance(backend, ScriptBackend)
    assert backend.installs_into_prefix is True


def test_inline_script_installs_into_prefix_with_the_conda_build_variables(
    tmp_path: Path, source: Path
) -> None:
    before = snapshot(source)
    host = tmp_path / "host"
    build_prefix = tmp_path / "build-env"
    python = host / "bin" / "python"
    script = [
        "mkdir -p $PREFIX/bin",
        "install -m 755 $SRC_DIR/tool.sh $PREFIX/bin/tool",
        "echo scratch > intermediate.txt",
        *REPORT_VARS,
    ]
    ctx = make_context(
        tmp_path,
        source,
        config={"script": script},
        host_prefix=host,
        build_prefix=build_prefix,
        python=python,
    )

    out = ScriptBackend().build(ctx)

    assert out.package is None and out.noarch is None
    tool = ctx.install_dir / "bin" / "tool"
    assert subprocess.run([tool], capture_output=True, text=True, check=True).stdout == (
        "tool says hi\n"
    )
    env = dict(
        line.split("=", 1)
        for line in (ctx.install_dir / "share/vars/env.txt").read_text().splitlines()
    )
    assert env == {
        "PREFIX": str(ctx.install_dir),
        "HOST_PREFIX": str(host),
        "BUILD_PREFIX": str(build_prefix),
        "SRC_DIR": str(source),
        "BUILD_DIR": str(ctx.build_dir),
        "PYTHON": str(python),
        "CPU_COUNT": "2",
    }
    assert (ctx.install_dir / "share/vars/cwd.txt").read_text().strip() == str(ctx.build_dir)
    assert (ctx.build_dir / "intermediate.txt").is_file()
    assert snapshot(source) == before, "the script's cwd must not be the source tree"


def test_a_single_string_script_works(tmp_path: Path, source: Path) -> None:
    ctx = make_context(
        tmp_path, source, config={"script": "mkdir -p $PREFIX/etc\necho one > $PREFIX/etc/one"}
    )
    ScriptBackend().build(ctx)
    assert (ctx.install_dir / "etc/one").read_text() == "one\n"


def test_build_sh_in_the_source_tree_is_the_default(tmp_path: Path, source: Path) -> None:
    write_tree(source, {"build.sh": "mkdir -p $PREFIX/lib\necho from-build-sh > $PREFIX/lib/x\n"})
    before = snapshot(source)
    ctx = make_context(tmp_path, source)

    ScriptBackend().build(ctx)

    assert (ctx.install_dir / "lib/x").read_text() == "from-build-sh\n"
    assert snapshot(source) == before


def test_configured_script_wins_over_build_sh(tmp_path: Path, source: Path) -> None:
    write_tree(source, {"build.sh": "exit 9\n"})
    ctx = make_context(tmp_path, source, config={"script": ["touch $PREFIX/configured"]})
    ScriptBackend().build(ctx)
    assert (ctx.install_dir / "configured").is_file()


def test_failing_step_stops_the_script_and_shows_the_log_tail(tmp_path: Path, source: Path) -> None:
    ctx = make_context(
        tmp_path,
        source,
        config={"script": ["echo before-the-failure", "false", "echo never-reached"]},
    )

    with pytest.raises(BuildError) as info:
        ScriptBackend().build(ctx)

    text = str(info.value)
    assert "before-the-failure" in text
    assert "never-reached" not in ctx.log_path.read_text()
    assert "exited with 1" in text and "bash -euo pipefail" in text


@pytest.mark.parametrize(
    "script",
    [
        ["false | cat", "touch $PREFIX/not-reached"],  # pipefail
        ['echo "$NOT_A_DEFINED_VARIABLE"', "touch $PREFIX/not-reached"],  # nounset
    ],
)
def test_strict_mode_catches_hidden_failures(
    tmp_path: Path, source: Path, script: list[str]
) -> None:
    ctx = make_context(tmp_path, source, config={"script": script})
    with pytest.raises(BuildError):
        ScriptBackend().build(ctx)
    assert not (ctx.install_dir / "not-reached").exists()


def test_missing_script_names_the_config_key(tmp_path: Path, source: Path) -> None:
    ctx = make_context(tmp_path, source)
    with pytest.raises(BuildError) as info:
        ScriptBackend().build(ctx)
    assert info.value.key == "package.build.config.script"
    assert info.value.file == ctx.manifest
    assert info.value.hint and "build.sh" in info.value.hint


def test_noarch_generic_is_passed_on(tmp_path: Path, source: Path) -> None:
    ctx = make_context(
        tmp_path, source, config={"script": "touch $PREFIX/data", "noarch": "generic"}
    )
    assert ScriptBackend().build(ctx).noarch == "generic"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"script": 3}, "package.build.config.script"),
        ({"script": ["ok", 3]}, "package.build.config.script"),
        ({"script": "  \n"}, "package.build.config.script"),
        ({"script": []}, "package.build.config.script"),
        ({"noarch": "python"}, "package.build.config.noarch"),
        ({"noarch": True}, "package.build.config.noarch"),
    ],
)
def test_bad_configuration_names_the_key(config: dict[str, object], key: str) -> None:
    manifest = Path("/project/pixi.toml")
    with pytest.raises(BuildError) as info:
        ScriptBackend().check_config(config, manifest)
    assert info.value.key == key
    assert info.value.file == manifest
    assert info.value.hint
