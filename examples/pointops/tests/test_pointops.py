"""pointops' own tests.

Besides the arithmetic, two tests check that the compiled extension belongs to
the environment running it: the Python it was built for and the CUDA version
found in its host environment.  A build reused from another variant fails them.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys

import pointops
import pytest
from pointops import _core


def test_dot() -> None:
    assert pointops.dot([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 32.0
    assert pointops.dot((1, 2), [0.5, 0.25]) == 1.0
    assert pointops.dot([], []) == 0.0


def test_dot_rejects_different_lengths() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        pointops.dot([1.0, 2.0], [1.0])


def test_dot_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match=r"b\[1\] is not a number"):
        pointops.dot([1.0, 2.0], [1.0, "x"])


def test_norm() -> None:
    assert pointops.norm([3.0, 4.0]) == 5.0
    assert pointops.norm([]) == 0.0
    assert pointops.norm([-2.0]) == 2.0
    assert math.isclose(pointops.norm([1e200, 1e200]), math.sqrt(2) * 1e200)
    assert math.isnan(pointops.norm([1.0, math.nan]))


def test_build_info_is_versioned() -> None:
    info = pointops.build_info()
    assert info["python"].release[:2] == sys.version_info[:2]


def test_extension_built_for_this_interpreter() -> None:
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert pointops.built_for_python() == here, (
        f"the extension was compiled for Python {pointops.built_for_python()}, this is Python {here}"
    )
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    assert tag in os.path.basename(_core.__file__), f"{_core.__file__} is not an extension for {tag}"


def _prefix_cuda_version() -> str | None:
    versions = []
    for path in glob.glob(os.path.join(sys.prefix, "conda-meta", "cuda-version-*.json")):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("name") == "cuda-version":
            versions.append(record["version"])
    assert len(versions) <= 1, f"several cuda-version packages in {sys.prefix}: {versions}"
    return versions[0] if versions else None


def test_extension_built_for_this_cuda_version() -> None:
    version = _prefix_cuda_version()
    if version is None:
        pytest.skip(f"no cuda-version package in {sys.prefix} (not a conda environment)")
    assert pointops.built_for_cuda() == version, (
        f"the extension was built for CUDA {pointops.built_for_cuda()}, this environment has cuda-version {version}"
    )


@pytest.mark.skipif(
    os.environ.get("HARNESS_GPU_AVAILABLE") != "1",
    reason="needs a CUDA driver for this cell: HARNESS_GPU_AVAILABLE is not 1",
)
def test_runner_driver_can_run_this_build() -> None:
    """On a GPU runner: the driver's CUDA is at least the major version the extension was built for.

    conda-forge's ``cuda-version X.Y`` asks for ``__cuda >=X``: a CUDA 13 build on
    a CUDA 12 driver fails at its first kernel launch, far from the cause.
    """
    from packaging.version import Version

    runner = os.environ.get("HARNESS_RUNNER_CUDA", "")
    assert runner, "HARNESS_GPU_AVAILABLE is 1 but HARNESS_RUNNER_CUDA is empty"
    built = pointops.build_info()["cuda"]
    if built is None:
        pytest.skip("the extension was built without a cuda-version")
    assert Version(runner).major >= built.major, (
        f"the extension was built for CUDA {built}, this runner's driver has CUDA {runner}"
    )
