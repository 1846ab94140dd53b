"""Two real cells (the offline channel's python and pytest) end up with one bytecode file per source."""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from pathlib import Path

import pytest

from harness.bytecode import mirror_dir
from harness.channel import OfflineChannel
from harness.pipeline import run_cells

CELLS = ("bc-one", "bc-two")


def pycs(root: Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(root)): p.stat() for p in root.rglob("*.pyc")}


@pytest.mark.slow
def test_cells_share_the_bytecode_of_their_packages_and_interpreter(
    offline_channel: OfflineChannel, make_cell, project: Path, pkgs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.setenv("HARNESS_PKGS_DIR", str(pkgs_dir))
    py = offline_channel.pythons[0]
    cells = [
        dataclasses.replace(
            make_cell(cell_id, deps=[f"python =={py.version}", "pytest"],
                      channels=(offline_channel.url,)),
            test_command='python -c "import pytest, _pytest.main"',
        )
        for cell_id in CELLS
    ]
    result = run_cells(cells, echo=False)
    assert not result.errors and all(o.ok for o in result.outcomes.values()), result

    root = project / ".harness"
    pycache = root / "pycache"
    mirrors = {cell: pycs(mirror_dir(pycache, root / "envs" / cell / "test")) for cell in CELLS}
    assert len(mirrors["bc-one"]) > 50 and mirrors["bc-one"].keys() == mirrors["bc-two"].keys()
    inodes: dict[tuple[int, int], set[str]] = defaultdict(set)
    for files in mirrors.values():
        for rel, st in files.items():
            inodes[(st.st_dev, st.st_ino)].add(rel)
    # One inode per source: each cell's copy of a file is the same inode, shared with the store.
    assert len(inodes) == len(mirrors["bc-one"])
    assert all(len(rels) == 1 for rels in inodes.values())
    assert all(st.st_nlink == 3 for files in mirrors.values() for st in files.values())
    stored = pycs(root / "bytecode")
    assert {(s.st_dev, s.st_ino) for s in stored.values()} >= set(inodes)

    # The interpreter's standard library: linked to the bytecode it ships (or, where that
    # cannot be proved to be the same, to the store).
    stdlib = [Path(p) for p in pycache.rglob("*.pyc")
              if not Path(p).is_relative_to(pycache / root.relative_to(root.anchor))]
    assert stdlib and all(p.stat().st_nlink > 1 for p in stdlib)

    again = run_cells(cells, echo=False)  # Python reads the links and writes nothing new
    assert again.ok
    for cell in CELLS:
        after = pycs(mirror_dir(pycache, root / "envs" / cell / "test"))
        assert {r: s.st_ino for r, s in after.items()} == {
            r: s.st_ino for r, s in mirrors[cell].items()}
