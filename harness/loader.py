"""Find and compile what the user points at: a matrix file, a manifest, or a directory."""

from __future__ import annotations

from pathlib import Path

from harness import inputs
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
    inputs.note(start / "matrices")
    # Files only: a directory named ``x.toml`` (or a symlink to one up the tree)
    # would otherwise be compiled as a directory, and a loop would never end.
    matrices = sorted(p for p in (start / "matrices").glob("*.toml") if p.is_file())
    if matrices:
        return matrices
    for name in ("pixi.toml", "pyproject.toml"):
        inputs.note(start / name)
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
    inputs.note(path)
    if path.is_dir():
        for n in ("pixi.toml", "pyproject.toml"):
            inputs.note(path / n)
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
    return Compiled(tuple(unique_cells(cells)), tuple(dict.fromkeys(warnings)), None)


def unique_cells(cells: list[Cell]) -> list[Cell]:
    """``cells`` with repeats of one source dropped; one id from two sources is an error.

    Ids are compared case-insensitively too: a cell's id names its directories
    under the cache root, and ``Py312`` and ``py312`` are one directory on the
    file systems of macOS and Windows runners.
    """
    out: list[Cell] = []
    ids: dict[str, tuple[str, Path]] = {}
    for c in cells:
        where = c.matrix or c.manifest
        folded = c.id.casefold()
        if folded in ids:
            other_id, other = ids[folded]
            if other_id == c.id and other == where:
                continue  # the same source named twice
            if other_id == c.id:
                message = f"cell '{c.id}' is defined by both {other} and {where}"
            else:
                message = f"cells '{other_id}' ({other}) and '{c.id}' ({where}) differ only in case"
            raise CellError(message, file=where, key=["name"] if c.matrix else ["environments", c.environment],
                            hint="rename one of the cells: ids name directories, and some file "
                            "systems ignore case")
        ids[folded] = (c.id, where)
        out.append(c)
    return out


def find_cells(ids: list[str], paths: list[Path] | None) -> list[Cell]:
    """Cells by id (a glob such as ``py312-*`` works), in the order asked."""
    import fnmatch

    compiled = compile_sources(paths)
    by_id = {c.id: c for c in compiled.cells}
    out: list[Cell] = []
    taken: set[str] = set()
    for wanted in ids:
        matched = [c for c in compiled.cells if fnmatch.fnmatchcase(c.id, wanted)]
        if not matched:
            from harness.manifest.read import did_you_mean

            sources = [str(p) for p in paths] if paths else ["matrices/*.toml or the manifest here"]
            raise CellError(f"no cell '{wanted}' in {', '.join(sources)}",
                            file=paths[0] if paths and len(paths) == 1 else None,
                            hint=did_you_mean(wanted, list(by_id)) or "list the cells with `harness list`")
        out += [c for c in matched if c.id not in taken]
        taken.update(c.id for c in matched)
    return out
