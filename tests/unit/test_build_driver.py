"""Atomic build state (DESIGN invariant 4): what a killed build leaves behind is never trusted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.build.driver import ARTIFACT_META, INCOMPLETE, _start_build_dir, read_artifact


def test_a_build_directory_left_incomplete_is_started_afresh(tmp_path: Path) -> None:
    build = tmp_path / "build" / "pkg" / "key"
    log = tmp_path / "logs" / "cell" / "build.log"
    _start_build_dir(build, log)
    (build / "half-written.o").write_bytes(b"\0" * 3)  # killed here: the marker stays
    _start_build_dir(build, log)
    assert not (build / "half-written.o").exists()
    assert (build / INCOMPLETE).exists()
    assert "did not finish; starting clean" in log.read_text()

    (build / INCOMPLETE).unlink()  # a build that finished
    (build / "kept.o").write_bytes(b"obj")
    _start_build_dir(build, log)
    assert (build / "kept.o").read_bytes() == b"obj"  # incremental state is reused


def test_an_artifact_is_trusted_only_with_its_metadata_and_archive(tmp_path: Path) -> None:
    art = tmp_path / "artifacts" / "pkg" / "key-src"
    (art / "linux-64").mkdir(parents=True)
    assert read_artifact(art) is None  # renamed in but no metadata: never happens, never trusted
    meta = {"package": "pkg", "version": "1", "build": "h0_0", "key": "key", "fingerprint": "src",
            "subdir": "linux-64", "archive": "pkg-1-h0_0.conda", "imports": ["pkg"],
            "archive_sha256": hashlib.sha256(b"x").hexdigest(), "archive_size": 1}
    (art / ARTIFACT_META).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="archive pkg-1-h0_0.conda is missing"):
        assert read_artifact(art) is None  # the archive is missing: not trusted, and said so
    (art / "linux-64" / "pkg-1-h0_0.conda").write_bytes(b"x")
    found = read_artifact(art)
    assert found is not None and found.spec == "pkg ==1 h0_0" and found.imports == ("pkg",)
    (art / ARTIFACT_META).write_text('{"package": "pkg"')  # truncated
    assert read_artifact(art) is None
