"""The seed's python x cuda manifest, reduced to a local channel, through the real
compiler and the real prepare stages: the case pixi failed to solve."""

from __future__ import annotations

from pathlib import Path

from harness.cache import Cache
from harness.compile import compile_manifest
from harness.manifest.read import load_manifest
from harness.report import RunReport
from harness.stages import prepare_many

SEED = """
[workspace]
channels = ["{channel}"]
platforms = ["linux-64"]
preview = ["pixi-build"]

[workspace.build-variants]
python = ["3.12.*", "3.13.*"]
cuda-version = ["12.*", "13.*"]

[feature.cu13.system-requirements]
cuda = "13"
[feature.cu13.dependencies]
cuda-version = "13.*"
[feature.cu12.system-requirements]
cuda = "12"
[feature.cu12.dependencies]
cuda-version = "12.*"
[feature.py313.dependencies]
python = "3.13.*"
[feature.py312.dependencies]
python = "3.12.*"

[environments]
py313-cu13 = ["py313", "cu13"]
py313-cu12 = ["py313", "cu12"]
py312-cu13 = ["py312", "cu13"]
py312-cu12 = ["py312", "cu12"]

[package]
name = "cupy"
version = "14.0.0a0"
[package.build]
backend = {{ name = "pixi-build-python", version = "*" }}
[package.host-dependencies]
cuda-version = "*"
python = "*"
[package.run-dependencies]
python = "*"
cuda-version = "*"

[dependencies]
cupy = {{ path = "." }}
cudakernel = "*"
"""


def test_python_x_cuda_cells_each_solve_to_their_own_versions(tmp_path: Path, main_channel: Path, pkgs_dir: Path) -> None:
    (tmp_path / "pixi.toml").write_text(SEED.format(channel=main_channel.as_uri()))
    compiled = compile_manifest(load_manifest(tmp_path / "pixi.toml"))
    cells = {c.id: c for c in compiled.cells}
    assert set(cells) == {"py313-cu13", "py313-cu12", "py312-cu13", "py312-cu12"}
    cache = Cache(root=tmp_path / ".harness", pkgs_dir=pkgs_dir)

    report = RunReport()
    outcome = prepare_many(list(cells.values()), cache=cache, report=report, build=False)
    assert not outcome.failures, {k: str(v) for k, v in outcome.failures.items()}
    for cid, prepared in outcome.prepared.items():
        versions = {p["name"]: str(p["version"]) for p in prepared.packages("test")}
        assert versions["python"].startswith(cid[2] + "." + cid[3:5])
        assert versions["cuda-version"].split(".")[0] == cid.split("-cu")[1]
        assert "cudakernel" in versions  # needs __cuda: the declared one, not this runner's
    solves = report.counts("solve")
    assert solves["done"] == 8 and solves["failed"] == 0  # host and test per cell; no build deps

    again = RunReport()
    prepare_many(list(cells.values()), cache=cache, report=again, build=False)
    assert again.counts("solve")["done"] == 0
    assert again.counts("install")["done"] == 0
