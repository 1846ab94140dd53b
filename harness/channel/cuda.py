"""``cuda-version`` metapackages with conda-forge's constraints.

conda-forge's ``cuda-version X.Y`` holds no files; it only ``constrains``
``__cuda >=X`` (the driver must support the major version) and
``cudatoolkit X.Y|X.Y.*``. Reproducing exactly that lets a cell's declared
``__cuda`` decide which CUDA versions are solvable, as it would on conda-forge.
"""

from __future__ import annotations

from harness.channel.conda_pkg import PackageSpec

#: Every ``cuda-version`` the channel provides.
CUDA_VERSIONS: tuple[str, ...] = (
    *(f"12.{i}" for i in range(10)),
    *(f"13.{i}" for i in range(3)),
)

#: conda-forge's cuda-version packages are at build number 3.
CUDA_BUILD = "h0_3"


def cuda_version_package(version: str) -> PackageSpec:
    """``cuda-version <version>`` (noarch: generic, no files)."""
    major = version.split(".", 1)[0]
    return PackageSpec(
        name="cuda-version",
        version=version,
        build=CUDA_BUILD,
        build_number=3,
        subdir="noarch",
        noarch="generic",
        constrains=(f"__cuda >={major}", f"cudatoolkit {version}|{version}.*"),
        summary=f"Metapackage that selects CUDA {version}",
        license="LicenseRef-NVIDIA-End-User-License-Agreement",
        key=f"cuda-version|{version}",
    )


def cuda_packages() -> tuple[PackageSpec, ...]:
    return tuple(cuda_version_package(v) for v in CUDA_VERSIONS)
