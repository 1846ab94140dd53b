"""Conformance: pixi's own manifests (and pixi's own error texts) against our reader."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.cell import check_id
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


@pytest.mark.parametrize("path", VALID + WARNING, ids=_id)
def test_valid_manifest_compiles_into_cells(path: Path) -> None:
    """Not only loaded: every valid manifest compiles into cells, with unique, safe ids."""
    compiled = compile_manifest(load_manifest(path))
    ids = [c.id for c in compiled.cells]
    assert ids and len(set(ids)) == len(ids)
    assert all(check_id(i) is None for i in ids)
    assert not any("None" in w for w in compiled.warnings)


# Cells whose count the open variants decide (pixi's solver would have picked one of each).
EXPANDED = {
    "external/NVIDIA__cuda-python/cuda_bindings/pixi.toml": ("cu13", 5, "python"),
    "pixi-repo/tests/data/pixi-build/build-variant-manifest-python/pixi.toml": ("default", 2, "package3"),
    "pixi-repo/tests/data/pixi-build/build-variant-files-python/pixi.toml": ("default", 3, "package3"),
}


@pytest.mark.parametrize("rel", sorted(EXPANDED))
def test_open_variants_expand_into_one_cell_per_value(rel: str) -> None:
    environment, count, key = EXPANDED[rel]
    cells = [c for c in compile_manifest(load_manifest(CORPUS / rel)).cells if c.environment == environment]
    assert len(cells) == count
    assert len({c.variant[key] for c in cells}) == count
    assert len({c.pure_key for c in cells}) == count


def test_cuda_bindings_cu13_cells_pin_five_pythons_and_run_the_linux_test_task() -> None:
    path = CORPUS / "external/NVIDIA__cuda-python/cuda_bindings/pixi.toml"
    cells = compile_manifest(load_manifest(path)).cells
    assert [c.id for c in cells] == [f"cu13-py3{m}" for m in range(10, 15)]
    assert {c.variant["python"] for c in cells} == {f"3.{m}.*" for m in range(10, 15)}
    assert all("python " + c.variant["python"] in c.variant_pins() for c in cells)
    assert all(c.test_command == "pytest $PIXI_PROJECT_ROOT" for c in cells)
    assert all(c.activation_env["PIXI_PROJECT_ROOT"] == str(path.parent) for c in cells)


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
