"""Fixtures for the offline channel tests.

``offline_channel`` (the full default channel) lives in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.channel import PythonInfo, discover_pythons

VIRTUAL_BASE = (("__unix", "0"), ("__linux", "6.0"), ("__glibc", "2.28"))


@pytest.fixture(scope="session")
def a_python() -> PythonInfo:
    """The newest usable interpreter on this machine (for small, fast channels)."""
    pythons = discover_pythons()
    if not pythons:
        pytest.skip("no CPython >= 3.8 interpreter on this machine")
    return pythons[-1]


def virtual_packages(extra: Mapping[str, str] | None = None) -> list[Any]:
    from rattler import BuildString, GenericVirtualPackage, PackageName, Version

    pairs = [*VIRTUAL_BASE, *(extra or {}).items()]
    return [GenericVirtualPackage(PackageName(n), Version(v), BuildString("0")) for n, v in pairs]


def _solve(
    channel: Path, specs: Sequence[str], extra: Mapping[str, str] | None = None
) -> list[Any]:
    from rattler import Gateway, solve

    async def run() -> list[Any]:
        return await solve(
            [channel.as_uri()],
            list(specs),
            gateway=Gateway(),
            platforms=["linux-64", "noarch"],
            virtual_packages=virtual_packages(extra),
            timeout=datetime.timedelta(seconds=60),
        )

    return asyncio.run(run())


@pytest.fixture
def solve_specs() -> Callable[..., list[Any]]:
    """``solve_specs(channel_dir, specs, {"__cuda": "12"})`` -> records (raises SolverError)."""
    return _solve


@pytest.fixture
def solve_install(tmp_path: Path) -> Callable[..., tuple[Path, list[Any]]]:
    """Solve ``specs`` against a channel and install them into a fresh prefix."""
    from rattler import install

    def run(
        channel: Path, specs: Sequence[str], extra: Mapping[str, str] | None = None
    ) -> tuple[Path, list[Any]]:
        records = _solve(channel, specs, extra)
        prefix = tmp_path / f"env-{len(list(tmp_path.glob('env-*')))}"
        asyncio.run(
            install(records, target_prefix=prefix, cache_dir=tmp_path / "pkgs", show_progress=False)
        )
        return prefix, records

    return run


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(
    directory: Path,
    name: str,
    version: str = "1.0",
    *,
    tag: str = "py3-none-any",
    requires: Sequence[str] = (),
    requires_python: str | None = ">=3.8",
    console_scripts: Mapping[str, str] | None = None,
    modules: Mapping[str, str] | None = None,
) -> Path:
    """Write a minimal but valid wheel (METADATA, WHEEL, RECORD, entry points)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", "Summary: test wheel"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    files: dict[str, bytes] = {
        f"{path}": text.encode() for path, text in (modules or {dist + "/__init__.py": ""}).items()
    }
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if console_scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in console_scripts.items())
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-{version}-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path


@pytest.fixture
def make_wheel(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, version: str = "1.0", **kwargs: Any) -> Path:
        return write_wheel(tmp_path / "wheels", name, version, **kwargs)

    return make


@pytest.fixture
def no_spawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sequence[str]]]:
    """Record every process started through ``subprocess`` (pip, interpreters)."""
    import subprocess

    calls: list[Sequence[str]] = []
    real = subprocess.Popen

    class Counting(real):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            calls.append(args)
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Counting)
    yield calls


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Notes gotcha 1: give rattler's background threads time before the
    # interpreter shuts down (cheap insurance; pytest itself was never hit).
    time.sleep(0.05)
