"""The variant key (invariant 1), config expansion and the source fingerprint: pure functions."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.build.expand import expand_config, expand_env_table, expand_text
from harness.build.key import referenced_variables, variant_key
from harness.build.package import build_string
from harness.build.source import source_fingerprint
from harness.cell import Cell, PackageBuild
from harness.errors import BuildError
from harness.frozen import FrozenDict, freeze

BASE_PACKAGE = PackageBuild(
    name="pointops",
    version="0.1.0",
    source_dir=Path("/src"),
    backend="pixi-build-python",
    backend_version="*",
    config=freeze({"noarch": False, "env": {"JOBS": "$(nproc)", "CUDA_PATH": "$PREFIX/targets"}}),
)
BASE_CELL = Cell(
    id="py312-cu13",
    manifest=Path("/src/pixi.toml"),
    environment="py312-cu13",
    platform="linux-64",
    profile="dev",
    profile_base="dev",
    variant=FrozenDict({"python": "3.12.*", "cuda-version": "13.*"}),
    dependencies=(),
    pypi_dependencies=FrozenDict(),
    virtual_packages=("__unix=0", "__linux=4.18", "__glibc=2.28", "__cuda=13"),
    channels=("offline",),
    activation_env=FrozenDict(),
    test_command=None,
    gpu="optional",
    cuda="13",
    tags=(),
    package=BASE_PACKAGE,
)
HOST = ({"name": "python", "version": "3.12.1", "build": "pyenv_0", "sha256": "a" * 64},
        {"name": "cuda-version", "version": "13.2", "build": "h0_3", "sha256": "b" * 64})
BUILD = ({"name": "cmake", "version": "3.31", "build": "0", "sha256": "c" * 64},)
BASE_INPUTS: dict[str, Any] = {
    "cell": BASE_CELL,
    "backend_version": "pixi-build-python/1",
    "build_packages": BUILD,
    "host_packages": HOST,
    "outside_env": {"CC": "gcc"},
}

texts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)


def _package(inputs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    cell = inputs["cell"]
    pkg = dataclasses.replace(cell.package, **changes)
    return {**inputs, "cell": dataclasses.replace(cell, package=pkg)}


def _cell(inputs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**inputs, "cell": dataclasses.replace(inputs["cell"], **changes)}


def _packages(key: str, index: int, field: str, value: str) -> Any:
    def change(inputs: dict[str, Any]) -> dict[str, Any]:
        pkgs = [dict(p) for p in inputs[key]]
        pkgs[index % len(pkgs)][field] = value
        return {**inputs, key: tuple(pkgs)}

    return change


# Each mutation changes exactly one key input to a value drawn by hypothesis.
MUTATIONS = {
    "package name": lambda v: lambda i: _package(i, name=v),
    "package version": lambda v: lambda i: _package(i, version=v),
    "backend": lambda v: lambda i: _package(i, backend=v),
    "backend version spec": lambda v: lambda i: _package(i, backend_version=v),
    "config value": lambda v: lambda i: _package(i, config=freeze({"noarch": False, "env": {"JOBS": v}})),
    "config key": lambda v: lambda i: _package(i, config=freeze({"noarch": False, "env": {"JOBS": "$(nproc)"}, v: 1})),
    "variant value": lambda v: lambda i: _cell(i, variant=FrozenDict({**i["cell"].variant, "python": v})),
    "variant key": lambda v: lambda i: _cell(i, variant=FrozenDict({**i["cell"].variant, v: "1"})),
    "platform": lambda v: lambda i: _cell(i, platform=v),
    "virtual package": lambda v: lambda i: _cell(i, virtual_packages=(*i["cell"].virtual_packages, f"__{v}=1")),
    "profile": lambda v: lambda i: _cell(i, profile=v),
    "backend implementation": lambda v: lambda i: {**i, "backend_version": v},
    "outside env": lambda v: lambda i: {**i, "outside_env": {"CC": v}},
    "host package version": lambda v: _packages("host_packages", 0, "version", v),
    "host package build": lambda v: _packages("host_packages", 1, "build", v),
    "host package sha256": lambda v: _packages("host_packages", 0, "sha256", v),
    "host package name": lambda v: _packages("host_packages", 1, "name", v),
    "build package version": lambda v: _packages("build_packages", 0, "version", v),
    "build package sha256": lambda v: _packages("build_packages", 0, "sha256", v),
    "added host package": lambda v: lambda i: {
        **i, "host_packages": (*i["host_packages"], {"name": v, "version": "1", "build": "0", "sha256": None})},
}


def _key(inputs: dict[str, Any]) -> str:
    return variant_key(
        inputs["cell"],
        backend_version=inputs["backend_version"],
        build_packages=inputs["build_packages"],
        host_packages=inputs["host_packages"],
        outside_env=inputs["outside_env"],
    ).key


def _same_inputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Input-level equality, independent of the key: the cell, and packages in any order."""

    def norm(pkgs: Any) -> list[str]:
        return sorted(repr(sorted(p.items())) for p in pkgs)

    return (
        a["cell"] == b["cell"]
        and a["backend_version"] == b["backend_version"]
        and a["outside_env"] == b["outside_env"]
        and norm(a["build_packages"]) == norm(b["build_packages"])
        and norm(a["host_packages"]) == norm(b["host_packages"])
    )


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(sorted(MUTATIONS)), value=texts)
def test_any_change_to_any_key_input_changes_the_key(which: str, value: str) -> None:
    mutated = MUTATIONS[which](value)(BASE_INPUTS)
    assume(not _same_inputs(mutated, BASE_INPUTS))  # "changing" python to the value it has
    assert _key(mutated) != _key(BASE_INPUTS), which


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(range(len(HOST))), which=st.sampled_from(sorted(MUTATIONS)), value=texts)
def test_equal_inputs_give_equal_keys(order: list[int], which: str, value: str) -> None:
    one = MUTATIONS[which](value)(BASE_INPUTS)
    two = MUTATIONS[which](value)(BASE_INPUTS)
    # The order packages come back from the solver in does not matter.
    two = {**two, "host_packages": tuple(two["host_packages"][i] for i in order) + two["host_packages"][len(HOST):]}
    assert _key(one) == _key(two)


def test_urls_of_packages_do_not_enter_the_key() -> None:
    moved = {**BASE_INPUTS, "host_packages": tuple({**p, "url": "file:///elsewhere/x.conda"} for p in HOST)}
    assert _key(moved) == _key(BASE_INPUTS)


def test_build_string_names_python_key_and_source() -> None:
    assert build_string({"python": "3.12.*"}, "f278ef5a4f15e5a7", "9b4176cf6c312ff9") == "py312hf278ef5a9b4176_0"
    assert build_string({}, "f278ef5a4f15e5a7", "9b4176cf6c312ff9") == "hf278ef5a9b4176_0"


# -- expansion ----------------------------------------------------------------------------


def test_expansion_of_the_seed_config_values() -> None:
    env = {"PREFIX": "/p", "BUILD_PREFIX": "/b"}
    assert expand_text("$PREFIX/targets/x86_64-linux", env, key="k") == "/p/targets/x86_64-linux"
    assert expand_text("${BUILD_PREFIX}/bin/nvcc", env, key="k") == "/b/bin/nvcc"
    assert expand_text("%PREFIX%\\Library", env, key="k") == "/p\\Library"
    assert expand_text("$(nproc)", env, key="k", nproc=7) == "7"
    assert expand_text("$UNSET-x", env, key="k") == "-x"
    assert expand_text("cost: $$5", env, key="k") == "cost: $5"


@pytest.mark.parametrize("text", ["$(rm -rf /)", "$(whoami)", "${PREFIX", "$(nproc"])
def test_anything_but_nproc_substitution_is_an_error_naming_the_key(text: str) -> None:
    with pytest.raises(BuildError) as info:
        expand_config({"env": {"CMD": text}}, {}, manifest=Path("/m/pixi.toml"))
    assert info.value.key == "package.build.config.env.CMD"
    assert str(info.value).startswith("/m/pixi.toml: package.build.config.env.CMD:")


def test_env_table_values_must_be_strings() -> None:
    assert expand_env_table({"A": 1, "B": True, "C": "$X"}, {"X": "y"}) == {"A": "1", "B": "1", "C": "y"}
    with pytest.raises(BuildError, match="must be a string"):
        expand_env_table({"A": ["no"]}, {})


def test_referenced_variables_are_found_everywhere() -> None:
    config = {"env": {"A": "$PREFIX/x ${CC} %WINVAR%"}, "extra-args": ["-D$FOO"], "n": 1}
    assert referenced_variables(config) == {"PREFIX", "CC", "WINVAR", "FOO"}


# -- source fingerprint -------------------------------------------------------------------


def _tree(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.c").write_text("int a;\n")
    (root / "setup.py").write_text("print('x')\n")


@pytest.mark.parametrize("use_git", [True, False])
def test_fingerprint_follows_content_not_mtimes_and_skips_caches(tmp_path: Path, use_git: bool) -> None:
    root = tmp_path / "p"
    _tree(root)
    if use_git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        (root / ".gitignore").write_text("ignored.txt\n__pycache__/\n")
    base = source_fingerprint(root)
    assert base.method == ("git" if use_git else "walk")
    os.utime(root / "src" / "a.c", (1, 1))
    assert source_fingerprint(root).digest == base.digest  # touched, not changed
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / ".harness").mkdir()
    (root / ".harness" / ".gitignore").write_text("*\n")
    (root / ".harness" / "big").write_text("cache\n")
    if use_git:
        (root / "ignored.txt").write_text("nope\n")
    else:
        (root / "build").mkdir()
        (root / "build" / "out.o").write_text("obj\n")
    after = source_fingerprint(root, exclude=(root / ".harness",))
    assert after.digest == base.digest and after.files == base.files
    (root / "src" / "a.c").write_text("int a = 1;\n")
    assert source_fingerprint(root).digest != base.digest
    (root / "src" / "a.c").write_text("int a;\n")
    (root / "src" / "new.c").write_text("int b;\n")  # an untracked new file counts
    assert source_fingerprint(root).digest != base.digest
