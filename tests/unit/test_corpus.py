"""Conformance: pixi's own manifests (and pixi's own error texts) against our reader."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.compile import compile_manifest
from harness.errors import HarnessError
from harness.manifest.read import load_manifest

CORPUS = Path(os.environ.get("HARNESS_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")) / "corpus" / "pixi-manifests"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the manifest corpus is not at {CORPUS}")


def _files(part: str) -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in (CORPUS / part).rglob("*.toml"))


VALID = [p for p in _files("") if p.relative_to(CORPUS).parts[0] not in ("invalid", "warnings")]
INVALID = _files("invalid")
WARNING = _files("warnings")


def _id(p: Path) -> str:
    return str(p.relative_to(CORPUS))


def test_corpus_counts() -> None:
    """The corpus README promises 65 valid manifests (7 of them warning) and 28 invalid ones."""
    assert len(VALID) + len(WARNING) == 65
    assert len(WARNING) == 7
    assert len(INVALID) == 28


@pytest.mark.parametrize("path", VALID + WARNING, ids=_id)
def test_valid_manifest_loads_and_lists_environments(path: Path) -> None:
    manifest = load_manifest(path)
    assert "default" in manifest.environments
    for env in manifest.environments.values():
        assert all(f in manifest.features for f in env.all_features)


@pytest.mark.parametrize("path", INVALID, ids=_id)
def test_invalid_manifest_is_rejected(path: Path) -> None:
    """Rejected at load, or (for backend configuration pixi checks at install time)
    when its cells are compiled; always a HarnessError with file and message."""
    with pytest.raises(HarnessError) as info:
        compile_manifest(load_manifest(path))
    error = info.value
    assert error.file is not None and error.file.name == path.name
    assert error.message
    expected = path.with_name(path.stem + ".expected.txt")
    if expected.exists():
        pixi_line = next(
            line for line in expected.read_text().splitlines() if line.strip().startswith("×")
        )
        names = re.findall(r"'([^']+)'|`([^`]+)`", pixi_line)
        tokens = {a or b for a, b in names} - {"pixi-build"}
        ours = str(error)
        if tokens:
            assert any(t in ours for t in tokens), f"pixi names {tokens}; we said: {ours}"
        else:
            words = {w for w in re.findall(r"[a-z][a-z\-]{4,}", pixi_line.lower())}
            assert any(w in ours.lower() for w in words), f"pixi said {pixi_line!r}; we said: {ours}"


@pytest.mark.parametrize("path", WARNING, ids=_id)
def test_warning_manifest_warns_about_the_same_thing(path: Path) -> None:
    manifest = load_manifest(path)
    expected = path.with_name(path.stem + ".expected.txt").read_text()
    wanted = [line for line in expected.splitlines() if line.strip().startswith("⚠")]
    assert manifest.warnings, "pixi warns about this manifest; so must we"
    joined = "\n".join(manifest.warnings)
    for line in wanted:
        quoted = re.findall(r"'([^']+)'", line)
        for token in quoted:
            assert token in joined, f"pixi warns {line.strip()!r}; we said {joined!r}"
        if not quoted:
            assert "deprecated" in joined


def test_errors_carry_a_line_number() -> None:
    path = CORPUS / "invalid/snapshots/toml__manifest__test__unknown_feature.toml"
    with pytest.raises(HarnessError) as info:
        load_manifest(path)
    assert info.value.line == 8  # pixi's snapshot points at line 8 as well
    assert "environments.foobar" in str(info.value)
