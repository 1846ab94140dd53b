"""Shared fixtures for the harness's own tests."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.channel import OfflineChannel, build_offline_channel

REPO = Path(__file__).resolve().parents[1]


def shared_base(factory: pytest.TempPathFactory) -> Path:
    """A temp directory common to every xdist worker of this run."""
    base = factory.getbasetemp()
    # Under xdist each worker has its own basetemp (.../pytest-N/popen-gwK);
    # the parent is common to the whole run.
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def warm_index(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own warm-start index: runs never write, and gc never prunes, the user's."""
    index = tmp_path_factory.mktemp("warm-index")
    monkeypatch.setenv("HARNESS_WARM_DIR", str(index))
    return index


@pytest.fixture(scope="session")
def offline_channel(tmp_path_factory: pytest.TempPathFactory) -> OfflineChannel:
    """The full default offline channel, built once per run and shared by all workers.

    The builder's own file lock makes the first worker build it while the
    others wait and then find it up to date.
    """
    return build_offline_channel(shared_base(tmp_path_factory) / "offline-channel")


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a dedented text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write
