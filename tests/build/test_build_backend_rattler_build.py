"""The ``pixi-build-rattler-build`` backend: offline rattler-build builds of small recipes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
from _native_fixtures import make_context, snapshot, write_tree
from rattler.index import index_fs
from rattler.package_streaming import extract
from rattler_build import assemble_package

from harness.build.backends import get_backend
from harness.build.backends.rattler_build import (
    OVERRIDES,
    RattlerBuildBackend,
    override_values,
    recipe_variant_value,
)
from harness.errors import BuildError

HELLO = """
    package:
      name: hello
      version: "1.0"
    build:
      noarch: generic
      script:
        - mkdir -p $PREFIX/share/hello
        - echo "hello" > $PREFIX/share/hello/greeting.txt
"""

CUDA_AWARE = """
    package:
      name: kernels
      version: "2.0"
    build:
      string: cu${{ cuda_version | replace('.', '') }}_0
      script:
        - mkdir -p $PREFIX/share/kernels
        - echo "built for cuda ${{ cuda_version }}" > $PREFIX/share/kernels/cuda.txt
"""


def unpack(package: Path, dest: Path) -> Path:
    extract(package, dest)
    return dest


def index_of(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "info" / "index.json").read_text())
    return data


def test_registered_under_pixi_name() -> None:
    backend = get_backend("pixi-build-rattler-build")
    assert isinstance(backend, RattlerBuildBackend)
    assert backend.installs_into_prefix is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3.12.*", "3.12"),
        ("3.12", "3.12"),
        ("==13.0", "13.0"),
        ("13.*", "13"),
        (" 12.8.* ", "12.8"),
        (">=1.2", ">=1.2"),
        ("3.12.* *_cpython", "3.12.* *_cpython"),
        ("openblas", "openblas"),
    ],
)
def test_variant_values_become_plain_recipe_values(value: str, expected: str) -> None:
    assert recipe_variant_value(value) == expected


def test_noarch_recipe_builds_offline_into_a_conda_package(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"recipe.yaml": HELLO})
    before = snapshot(source)
    ctx = make_context(tmp_path, source, variant={"python": "3.12.*"})

    out = RattlerBuildBackend().build(ctx)

    assert out.package is not None and out.package.suffix == ".conda"
    assert out.package.is_relative_to(ctx.build_dir)
    assert (
        out.package.name
        == "hello-1.0-" + index_of(unpack(out.package, tmp_path / "x"))["build"] + ".conda"
    )
    assert (tmp_path / "x/share/hello/greeting.txt").read_text() == "hello\n"
    assert index_of(tmp_path / "x")["noarch"] == "generic"
    assert "Archive written to" in ctx.log_path.read_text(), "rattler-build's messages are logged"
    assert snapshot(source) == before


def test_the_cells_variant_value_is_the_one_built(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {"recipe.yaml": CUDA_AWARE, "variants.yaml": "cuda_version:\n  - '12.8'\n  - '13.0'\n"},
    )
    built = {}
    for value in ("13.0.*", "12.8.*"):
        name = value[:4]
        ctx = make_context(
            tmp_path,
            source,
            variant={"cuda_version": value, "python": "3.12.*"},
            build_dir=tmp_path / f"build-{name}",
            install_dir=tmp_path / f"install-{name}",
        )
        package = RattlerBuildBackend().build(ctx).package
        assert package is not None
        root = unpack(package, tmp_path / f"x-{name}")
        built[name] = (package.name, (root / "share/kernels/cuda.txt").read_text())

    assert built == {
        "13.0": ("kernels-2.0-cu130_0.conda", "built for cuda 13.0\n"),
        "12.8": ("kernels-2.0-cu128_0.conda", "built for cuda 12.8\n"),
    }


def test_a_variant_key_the_cell_leaves_open_is_an_error_listing_the_variants(
    tmp_path: Path,
) -> None:
    source = write_tree(
        tmp_path / "src",
        {"recipe.yaml": CUDA_AWARE, "variants.yaml": "cuda_version: ['12.8', '13.0']\n"},
    )
    ctx = make_context(tmp_path, source, variant={"python": "3.12.*"})
    with pytest.raises(BuildError) as info:
        RattlerBuildBackend().build(ctx)
    text = str(info.value)
    assert "2 variants" in text and "'12.8'" in text and "'13.0'" in text
    assert info.value.key == "package.build.config.recipe"


def test_an_undefined_variant_variable_is_a_render_error(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"recipe.yaml": CUDA_AWARE})
    ctx = make_context(tmp_path, source, variant={"cuda": "13.0.*"})
    with pytest.raises(BuildError) as info:
        RattlerBuildBackend().build(ctx)
    assert "cannot render" in str(info.value) and "'cuda': '13.0.*'" in str(info.value)
    assert info.value.hint and "build variant" in info.value.hint


def test_failing_build_script_shows_its_output(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "recipe.yaml": """
                package:
                  name: broken
                  version: "1.0"
                build:
                  noarch: generic
                  script:
                    - echo "compiling the broken part"
                    - echo "the compiler complains" >&2
                    - exit 3
            """
        },
    )
    ctx = make_context(tmp_path, source)

    with pytest.raises(BuildError) as info:
        RattlerBuildBackend().build(ctx)

    text = str(info.value)
    assert "rattler-build failed" in text
    assert "Script failed with status 3" in text
    assert "compiling the broken part" in text and "the compiler complains" in text
    assert info.value.hint and str(ctx.log_path) in info.value.hint


def test_path_source_is_copied_and_the_source_tree_stays_untouched(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "conda/recipe.yaml": """
                package:
                  name: fromsource
                  version: "0.1"
                source:
                  path: ..
                build:
                  noarch: generic
                  script:
                    - echo "object" > built.o
                    - mkdir -p build && touch build/state
                    - mkdir -p $PREFIX/share/fromsource
                    - cp data/payload.txt $PREFIX/share/fromsource/
            """,
            "data/payload.txt": "payload\n",
        },
    )
    before = snapshot(source)
    ctx = make_context(tmp_path, source, config={"recipe": "conda"})

    package = RattlerBuildBackend().build(ctx).package

    assert package is not None
    root = unpack(package, tmp_path / "x")
    assert (root / "share/fromsource/payload.txt").read_text() == "payload\n"
    assert snapshot(source) == before


def test_a_rebuild_replaces_the_previous_output(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"recipe/recipe.yaml": HELLO})
    ctx = make_context(tmp_path, source)
    first = RattlerBuildBackend().build(ctx).package
    (source / "recipe/recipe.yaml").write_text(
        (source / "recipe/recipe.yaml").read_text().replace('"hello"', '"hello again"')
    )
    second = RattlerBuildBackend().build(ctx).package
    assert first == second and second is not None
    root = unpack(second, tmp_path / "x")
    assert (root / "share/hello/greeting.txt").read_text() == "hello again\n"


def test_host_requirements_are_solved_from_the_cells_channels(tmp_path: Path) -> None:
    stage = write_tree(tmp_path / "stage", {"share/greetdata/words.txt": "bonjour\n"})
    channel = tmp_path / "channel"
    (channel / "linux-64").mkdir(parents=True)
    assemble_package(
        name="greetdata",
        version="1.0",
        target_platform="noarch",
        build_string="0",
        output_dir=channel / "noarch",
        files_dir=stage,
        noarch="generic",
    )
    asyncio.run(index_fs(channel))
    source = write_tree(
        tmp_path / "src",
        {
            "recipe.yaml": """
                package:
                  name: greeter
                  version: "1.0"
                build:
                  noarch: generic
                  script:
                    - mkdir -p $PREFIX/share/greeter
                    - cp $PREFIX/share/greetdata/words.txt $PREFIX/share/greeter/
                requirements:
                  host:
                    - greetdata
            """
        },
    )
    ctx = make_context(tmp_path, source, channels=(channel.as_uri(),))

    package = RattlerBuildBackend().build(ctx).package

    assert package is not None
    root = unpack(package, tmp_path / "x")
    assert (root / "share/greeter/words.txt").read_text() == "bonjour\n"
    assert not (root / "share/greetdata").exists(), "host files are not packaged"


def test_missing_recipe_names_the_config_key(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"README": "no recipe here\n"})
    for config in ({}, {"recipe": "conda/recipe.yaml"}):
        ctx = make_context(tmp_path, source, config=config)
        with pytest.raises(BuildError) as info:
            RattlerBuildBackend().build(ctx)
        assert info.value.key == "package.build.config.recipe"
        assert info.value.hint


@pytest.mark.parametrize("recipe", [3, "", ["recipe.yaml"]])
def test_bad_recipe_setting_names_the_key(recipe: object) -> None:
    manifest = Path("/project/pixi.toml")
    with pytest.raises(BuildError) as info:
        RattlerBuildBackend().check_config({"recipe": recipe}, manifest)
    assert info.value.key == "package.build.config.recipe"
    assert info.value.file == manifest


NEEDS_CUDA_13 = """
    package:
      name: needs-cuda
      version: "1.0"
    requirements:
      host:
        - __cuda >=13
    build:
      noarch: generic
      script:
        - mkdir -p $PREFIX/share/needs-cuda && echo built > $PREFIX/share/needs-cuda/ok.txt
"""

LINUX_CPU = ("__unix=0", "__linux=4.18", "__glibc=2.28", "__archspec=1=x86_64")


@pytest.mark.parametrize("runner_cuda", [None, "12.0"], ids=["no-gpu", "older-driver"])
def test_a_cuda_cell_builds_with_its_declared_virtual_packages_on_any_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner_cuda: str | None
) -> None:
    # The runner: no GPU, or a driver too old for the cell.
    if runner_cuda is None:
        monkeypatch.delenv("CONDA_OVERRIDE_CUDA", raising=False)
    else:
        monkeypatch.setenv("CONDA_OVERRIDE_CUDA", runner_cuda)
    source = write_tree(tmp_path / "src", {"recipe.yaml": NEEDS_CUDA_13})
    ctx = dataclasses.replace(make_context(tmp_path, source), virtual_packages=(*LINUX_CPU, "__cuda=13"))

    out = RattlerBuildBackend().build(ctx)

    assert out.package is not None
    assert (unpack(out.package, tmp_path / "x") / "share/needs-cuda/ok.txt").read_text() == "built\n"
    assert "virtual packages: __unix=0, __linux=4.18, __glibc=2.28" in ctx.log_path.read_text()
    assert os.environ.get("CONDA_OVERRIDE_CUDA") == runner_cuda  # the runner's value is back
    assert all(os.environ.get(v) is None for v in OVERRIDES.values() if v != "CONDA_OVERRIDE_CUDA")


def test_a_runners_gpu_does_not_let_a_cell_without_cuda_solve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "13.0")
    source = write_tree(tmp_path / "src", {"recipe.yaml": NEEDS_CUDA_13})
    ctx = dataclasses.replace(make_context(tmp_path, source), virtual_packages=LINUX_CPU)
    with pytest.raises(BuildError, match="rattler-build failed"):
        RattlerBuildBackend().build(ctx)
    assert os.environ["CONDA_OVERRIDE_CUDA"] == "13.0"
    # Outside a cell (nothing declared) the backend leaves detection to rattler: the runner's GPU.
    RattlerBuildBackend().build(make_context(tmp_path, source, build_dir=tmp_path / "plain"))


def test_declared_virtual_packages_become_rattler_overrides() -> None:
    assert override_values((*LINUX_CPU, "__cuda=12.8")) == {
        "CONDA_OVERRIDE_CUDA": "12.8",
        "CONDA_OVERRIDE_GLIBC": "2.28",
        "CONDA_OVERRIDE_LINUX": "4.18",
        "CONDA_OVERRIDE_OSX": "",
        "CONDA_OVERRIDE_ARCHSPEC": "x86_64",
    }
    assert set(override_values(()).values()) == {""}
