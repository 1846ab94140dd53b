"""Find and compile what the user points at: a matrix file, a manifest, or a directory."""

from __future__ import annotations

from pathlib import Path

from harness.cell import Cell
from harness.compile import Compiled, compile_manifest
from harness.errors import CellError, HarnessError
from harness.tomlfile import read_toml


def is_matrix(path: Path) -> bool:
    """A matrix file names a manifest at its top level; a manifest never does."""
    if path.name in ("pixi.toml", "pyproject.toml"):
        return False
    try:
        return "manifest" in read_toml(path).data
    except HarnessError:
        return path.parent.name == "matrices"


def default_sources(start: Path | None = None) -> list[Path]:
    """Without an argument: ``matrices/*.toml`` if present, else the manifest here."""
    start = start or Path.cwd()
    matrices = sorted((start / "matrices").glob("*.toml"))
    if matrices:
        return matrices
    for name in ("pixi.toml", "pyproject.toml"):
        if (start / name).is_file():
            return [start / name]
    raise HarnessError("no matrices/*.toml and no pixi manifest here", file=start,
                       hint="pass a matrix file or a manifest: harness list path/to/pixi.toml")


def compile_path(path: Path, *, platform: str | None = None) -> Compiled:
    """Compile one matrix file or manifest (a directory means its manifest or matrices)."""
    from harness.manifest.read import load_manifest
    from harness.matrix.expand import compile_matrix
    from harness.matrix.read import load_matrix

    path = Path(path)
    if path.is_dir():
        if any((path / n).is_file() for n in ("pixi.toml", "pyproject.toml")):
            return compile_manifest(load_manifest(path), platform=platform)
        sources = default_sources(path)
        cells: list[Cell] = []
        warnings: list[str] = []
        for src in sources:
            compiled = compile_path(src, platform=platform)
            cells += compiled.cells
            warnings += compiled.warnings
        return Compiled(tuple(cells), tuple(warnings), path)
    if is_matrix(path):
        return compile_matrix(load_matrix(path))
    return compile_manifest(load_manifest(path), platform=platform)


def compile_sources(paths: list[Path] | None) -> Compiled:
    paths = paths or default_sources()
    cells: list[Cell] = []
    warnings: list[str] = []
    for p in paths:
        compiled = compile_path(p)
        cells += compiled.cells
        warnings += compiled.warnings
    ids: dict[str, Path] = {}
    for c in cells:
        where = c.matrix or c.manifest
        if c.id in ids and ids[c.id] != where:
            raise HarnessError(f"cell '{c.id}' is defined by both {ids[c.id]} and {where}",
                               hint="rename one of the cells")
        ids[c.id] = where
    return Compiled(tuple(cells), tuple(dict.fromkeys(warnings)), None)


def find_cells(ids: list[str], paths: list[Path] | None) -> list[Cell]:
    """Cells by id (a glob such as ``py312-*`` works), in the order asked."""
    import fnmatch

    compiled = compile_sources(paths)
    by_id = {c.id: c for c in compiled.cells}
    out: list[Cell] = []
    for wanted in ids:
        matched = [c for c in compiled.cells if fnmatch.fnmatchcase(c.id, wanted)]
        if not matched:
            from harness.manifest.read import did_you_mean

            raise CellError(f"no cell '{wanted}'", hint=did_you_mean(wanted, list(by_id))
                            or "list the cells with `harness list`")
        out += [c for c in matched if c not in out]
    return out
