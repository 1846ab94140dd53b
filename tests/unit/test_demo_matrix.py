"""The demo matrix (``matrices/demo.toml``) and the example it builds (``examples/pointops``).

The demo is what users run first, so its cells must be exactly the advertised
python x cuda x profile product, each with one explicit variant; and the example's
own manifest must describe the same cells as the matrix does.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from harness.cell import Cell
from harness.compile import Compiled
from harness.loader import compile_path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "matrices" / "demo.toml"
EXAMPLE = REPO / "examples" / "pointops" / "pixi.toml"
PYTHONS = ("10", "11", "12", "13")
CUDAS = ("12", "13")


@pytest.fixture(scope="module")
def demo() -> Compiled:
    return compile_path(DEMO)


@pytest.fixture(scope="module")
def cells(demo: Compiled) -> dict[str, Cell]:
    return {c.id: c for c in demo.cells}


def _versions(cell: Cell) -> dict[str, str]:
    return {d.name: d.version for d in cell.dependencies if not d.is_source}


def test_demo_has_sixteen_cells_named_by_python_cuda_and_profile(demo: Compiled, cells: dict[str, Cell]) -> None:
    expected = {
        f"py3{py}-cu{cu}{suffix}"
        for py, cu, suffix in itertools.product(PYTHONS, CUDAS, ("", "-release"))
    }
    assert len(demo.cells) == 16
    assert set(cells) == expected
    assert demo.warnings == ()


@pytest.mark.parametrize(("py", "cu"), list(itertools.product(PYTHONS, CUDAS)))
def test_each_cell_has_its_own_explicit_variant_and_cuda(cells: dict[str, Cell], py: str, cu: str) -> None:
    dev, release = cells[f"py3{py}-cu{cu}"], cells[f"py3{py}-cu{cu}-release"]
    for cell in (dev, release):
        assert dict(cell.variant) == {"python": f"3.{py}.*", "cuda-version": f"{cu}.*"}
        assert [v for v in cell.virtual_packages if v.startswith("__cuda")] == [f"__cuda={cu}"]
        assert cell.cuda == cu
        assert dict(cell.axes) == {"python": f"3.{py}", "cuda": cu}
        deps = _versions(cell)
        assert deps["python"] == f"3.{py}.*" and deps["cuda-version"] == f"{cu}.*"
        assert "pytest" in deps, "the test feature must reach every cell: the test command runs pytest"
        assert cell.gpu == "optional"
        assert {f"py3{py}", f"cu{cu}", cell.profile} <= set(cell.tags)
        assert cell.test_command == "python -m pytest tests -q"
    assert (dev.profile, dev.profile_base) == ("dev", "dev")
    assert (release.profile, release.profile_base) == ("release", "release")
    assert dev.pure_key != release.pure_key


def test_every_demo_cell_has_its_own_variant_key(demo: Compiled) -> None:
    assert len({c.pure_key for c in demo.cells}) == 16


def test_demo_builds_the_example_package_as_a_platform_specific_python_build(demo: Compiled) -> None:
    for cell in demo.cells:
        pkg = cell.package
        assert pkg is not None
        assert (pkg.name, pkg.version, pkg.backend) == ("pointops", "0.1.0", "pixi-build-python")
        assert pkg.source_dir == EXAMPLE.parent
        assert pkg.config["noarch"] is False
        # expanded at build time, against the build environment: still literal here
        assert dict(pkg.config["env"]) == {"POINTOPS_BUILD_JOBS": "$(nproc)"}
        assert {d.name for d in pkg.host_deps} == {"python", "setuptools", "cuda-version"}
        assert {d.name for d in pkg.run_deps} == {"python", "cuda-version", "packaging"}
        assert cell.channels == ("offline",)


def test_manifest_environments_compile_to_the_same_eight_builds(cells: dict[str, Cell]) -> None:
    compiled = compile_path(EXAMPLE)
    own = {c.id: c for c in compiled.cells}
    assert set(own) == {f"py3{py}-cu{cu}" for py, cu in itertools.product(PYTHONS, CUDAS)}
    # the implicit default environment is no cell beside declared ones, and no warning says so
    assert not any("default" in w for w in compiled.warnings)
    for cid, cell in own.items():
        assert cell.environment == cid and cell.profile == "dev"
        assert cell.variant == cells[cid].variant
        assert cell.virtual_packages == cells[cid].virtual_packages
        assert "pytest" in _versions(cell)
        # the environment and the matrix cell describe one build: they must share it
        assert cell.pure_key == cells[cid].pure_key
