"""Fixtures for the environment stages: local ``file://`` channels built on the fly, cells, caches.

conda-forge is not reachable here, so every package is assembled with
``rattler_build.assemble_package`` and indexed with ``rattler.index.index_fs``.
Channels are built once per xdist worker (session scope) and shared; a test
that mutates a channel builds its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rattler.index import index_fs
from rattler_build import assemble_package

from harness.cache import Cache
from harness.cell import Cell, PackageBuild
from harness.frozen import FrozenDict
from harness.specs import Dep

RUNNER = Path(__file__).with_name("_prepare_runner.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Pkg:
    """A package to assemble: files are ``{relative path: text}``."""

    name: str
    version: str
    subdir: str = "noarch"
    build: str = "0"
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)


def assemble(chan: Path, pkg: Pkg, staging: Path) -> Path:
    """Build one ``.conda`` archive into ``chan/<subdir>``."""
    stage = staging / f"{pkg.name}-{pkg.version}-{pkg.build}-{time.monotonic_ns()}"
    files = pkg.files or {f"share/{pkg.name}/{pkg.version}.txt": f"{pkg.name} {pkg.version}\n"}
    for rel, text in files.items():
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if rel.startswith("bin/"):
            target.chmod(0o755)
    for rel, dest in pkg.symlinks.items():
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(dest, target)
    (chan / pkg.subdir).mkdir(parents=True, exist_ok=True)
    out = assemble_package(
        name=pkg.name,
        version=pkg.version,
        target_platform=pkg.subdir,
        build_string=pkg.build,
        output_dir=chan / pkg.subdir,
        files_dir=stage,
        depends=list(pkg.depends) or None,
        constrains=list(pkg.constrains) or None,
        noarch="generic" if pkg.subdir == "noarch" else None,
    )
    return Path(out.path)


def build_channel(chan: Path, pkgs: list[Pkg], *, force: bool = False) -> Path:
    """Assemble ``pkgs`` into ``chan`` and (re-)index it; returns the channel directory."""
    staging = chan.parent / f".{chan.name}-staging"
    for sub in ("noarch", "linux-64"):
        (chan / sub).mkdir(parents=True, exist_ok=True)
    for pkg in pkgs:
        assemble(chan, pkg, staging)
    asyncio.run(index_fs(chan, force=force))
    return chan


MAIN_PACKAGES = [
    Pkg("python", "3.12.0", "linux-64", files={"bin/python-fake": "#!/bin/sh\necho 3.12\n"}),
    Pkg("python", "3.13.0", "linux-64", files={"bin/python-fake": "#!/bin/sh\necho 3.13\n"}),
    Pkg("cuda-version", "12.8", constrains=("__cuda >=12",)),
    Pkg("cuda-version", "13.0", constrains=("__cuda >=13",)),
    Pkg("cudakernel", "1.0", "linux-64", depends=("__cuda", "cuda-version")),
    Pkg("libfoo", "1.0"),
    Pkg("libfoo", "2.0"),
    Pkg("libbar", "1.0", depends=("libfoo",)),
    Pkg("app", "1.0", "linux-64", depends=("libfoo >=1", "python")),
    Pkg("needsnew", "1.0", depends=("libfoo >=2",)),
    Pkg("needsold", "1.0", depends=("libfoo <2",)),
    Pkg("tool", "1.0", "linux-64"),
    Pkg(
        "actpkg",
        "1.0",
        files={
            "etc/conda/activate.d/actpkg.sh": 'export ACTPKG_HOME="$CONDA_PREFIX/share/actpkg"\n',
            "share/actpkg/README": "activation test\n",
        },
    ),
]


@pytest.fixture(scope="session")
def main_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_channel(tmp_path_factory.mktemp("channels") / "main", MAIN_PACKAGES)


@pytest.fixture(scope="session")
def pkgs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One package cache per worker, shared by its tests (as the real one is shared)."""
    return tmp_path_factory.mktemp("pkgs")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory; cells' manifest is ``project/pixi.toml``."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pixi.toml").write_text("# cells are built directly in these tests\n")
    return root


@pytest.fixture
def cache(project: Path, pkgs_dir: Path) -> Cache:
    return Cache(root=project / ".harness", pkgs_dir=pkgs_dir)


CellFactory = Callable[..., Cell]


@pytest.fixture
def make_cell(project: Path, main_channel: Path) -> CellFactory:
    """Build a :class:`Cell` directly: ``make_cell("py312-cu12", deps=["python"], cuda="12", ...)``."""

    def factory(
        cell_id: str,
        *,
        deps: list[str] | tuple[str, ...] = (),
        variant: dict[str, str] | None = None,
        cuda: str | None = None,
        channels: tuple[str, ...] | None = None,
        pypi: dict[str, Any] | None = None,
        activation_env: dict[str, str] | None = None,
        package: PackageBuild | None = None,
        platform: str = "linux-64",
    ) -> Cell:
        dependencies = []
        for text in deps:
            name, _, version = text.partition(" ")
            dependencies.append(Dep(name=name, version=version or "*"))
        vps = ["__unix=0", "__linux=5.4", "__glibc=2.28"]
        if cuda:
            vps.append(f"__cuda={cuda}")
        return Cell(
            id=cell_id,
            manifest=project / "pixi.toml",
            environment=cell_id,
            platform=platform,
            profile="release",
            profile_base="release",
            variant=FrozenDict(variant or {}),
            dependencies=tuple(dependencies),
            pypi_dependencies=FrozenDict(pypi or {}),
            virtual_packages=tuple(vps),
            channels=channels if channels is not None else (main_channel.as_uri(),),
            activation_env=FrozenDict(activation_env or {}),
            test_command=None,
            gpu="required" if cuda else "none",
            cuda=cuda,
            tags=(),
            package=package,
        )

    return factory


# -- subprocesses running prepare ---------------------------------------------------------


@dataclass
class Runner:
    """A subprocess running :func:`harness.stages.prepare` on one pickled cell."""

    proc: subprocess.Popen[bytes]
    result: Path
    started: Path

    def wait_result(self, timeout: float = 90) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, (self.proc.returncode, out.decode(), err.decode())
        return json.loads(self.result.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Start ``prepare`` in a subprocess; ``pause_file`` makes it stop mid-install (fault hook)."""
    runners: list[Runner] = []
    counter = iter(range(1_000_000))

    def start(cell: Cell, cache: Cache, *, pause_file: Path | None = None) -> Runner:
        n = next(counter)
        job = tmp_path / f"job-{n}"
        job.mkdir()
        (job / "input.pickle").write_bytes(pickle.dumps((cell, cache)))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("HARNESS_FAULT_PAUSE_INSTALL", None)
        if pause_file is not None:
            env["HARNESS_FAULT_PAUSE_INSTALL"] = str(pause_file)
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER), str(job)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        runner = Runner(proc=proc, result=job / "result.json", started=job / "started")
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.kill()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """Poll for a condition another process signals (synchronisation, not a timing assertion)."""
    return _wait_for


@pytest.fixture
def channel_kit() -> Any:
    """``Pkg`` and ``build_channel`` for tests that need a channel of their own."""

    class Kit:
        pass

    kit = Kit()
    kit.Pkg = Pkg  # type: ignore[attr-defined]
    kit.build = build_channel  # type: ignore[attr-defined]
    kit.assemble = assemble  # type: ignore[attr-defined]
    return kit


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give rattler's background threads a moment before interpreter shutdown (notes gotcha 1)."""
    time.sleep(0.2)
