"""Disk used by 8 cells of the demo against one cell (hard links counted once, real blocks).

Run: python benchmarks/disk.py

Builds and tests the demo's first cell, then seven more (Python 3.12 and 3.13
x CUDA 12 and 13 x dev and release), in a fresh cache root and a fresh conda
package cache, and counts the real blocks (st_blocks x 512) of every inode
under both, each inode once however many prefixes hard-link it.  Target:
8 cells <= 1.2 x one cell.  Files that are hard links of the interpreters'
own bytecode (the standard library's ``.pyc`` files, which the harness links
instead of compiling again) existed before the harness ran and are not
counted; the figure that counts them is printed too, as is the figure
without the offline channel and the package cache (what the cells add on top
of what they share), where the per-cell blocks go, and the floor: what 8 cells
would use if each kept only the part of its own prefixes that cannot be shared
(directories and ``conda-meta`` records; see :func:`floor`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrices" / "demo.toml"
FIRST = "py312-cu13"
MORE = [
    "py312-cu12", "py313-cu12", "py313-cu13",
    "py312-cu12-release", "py312-cu13-release", "py313-cu12-release", "py313-cu13-release",
]


def blocks(paths: list[Path], seen: set[tuple[int, int]] | None = None) -> int:
    """Real bytes of every inode under ``paths``, each inode once."""
    seen = set() if seen is None else seen
    total = 0
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [*dirnames, *filenames, ""]:
                path = os.path.join(dirpath, name) if name else dirpath
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
    return total


def interpreter_bytecode(cache: Path) -> set[tuple[int, int]]:
    """The inodes of the ``.pyc`` files the cells' interpreters ship (found through the
    prefixes' ``pyvenv.cfg``): on disk before any cell existed."""
    homes = set()
    for cfg in cache.glob("envs/*/*/pyvenv.cfg"):
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                homes.add(Path(value.strip()).parent / "lib")
    seen: set[tuple[int, int]] = set()
    for lib in homes:
        for dirpath, _dirnames, filenames in os.walk(lib):
            for name in filenames:
                if name.endswith(".pyc"):
                    st = os.lstat(os.path.join(dirpath, name))
                    seen.add((st.st_dev, st.st_ino))
    return seen


def where(root: Path) -> Counter[str]:
    """Blocks per kind of thing under the cache root (prefix files vs. conda-meta vs. directories...)."""
    out: Counter[str] = Counter()
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        top = rel[0] if rel else "."
        st = os.lstat(dirpath)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out[f"{top}: directories"] += st.st_blocks * 512
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            kind = "conda-meta" if "conda-meta" in rel else ("linked files" if st.st_nlink > 1 else "own files")
            out[f"{top}: {kind}"] += st.st_blocks * 512
    return out


def floor(cache: Path, pkgs: Path, skip: set[tuple[int, int]], *, bytecode: bool = True) -> int:
    """The least 8 cells could use while each owns its environments: what they share (offline
    channel, package cache and, unless ``bytecode`` is false, the bytecode store) plus only the
    blocks of prefixes that nothing can share (directories, ``conda-meta`` records, files not
    linked from the cache): each cell's test and import prefixes, and one host prefix per
    distinct host package set (as if cells with equal host solves shared one).  No build
    directory, artifact, bytecode mirror or record counts."""
    seen = set(skip)
    total = blocks([cache / "channels", pkgs, *([cache / "bytecode"] if bytecode else [])], seen)
    hosts: dict[frozenset[str], Path] = {}
    for host in sorted(cache.glob("envs/*/host")):
        hosts.setdefault(frozenset(os.listdir(host / "conda-meta")), host)
    for prefix in [*cache.glob("envs/*/test"), *cache.glob("envs/*/import"), *hosts.values()]:
        for dirpath, _dirnames, filenames in os.walk(prefix):
            for path in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) not in seen and (st.st_nlink == 1 or path == dirpath):
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def run(cells: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "test", "--from", str(MATRIX), *cells, "-q"],
        cwd=ROOT, env=env, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"harness test {cells} failed:\n{proc.stdout.decode()[-3000:]}{proc.stderr.decode()[-3000:]}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        pkgs = Path(tmp) / "pkgs"
        env = {**os.environ, "HARNESS_CACHE_DIR": str(cache), "HARNESS_PKGS_DIR": str(pkgs)}
        run([FIRST], env)
        shared = [cache / "channels", pkgs]
        cells_only = [p for p in cache.iterdir() if p.name != "channels"]
        one_counted = blocks([cache, pkgs])
        one_all = blocks([cache, pkgs], interpreter_bytecode(cache))
        one_cells = blocks(cells_only)
        one_cells_over_shared = one_all - blocks(shared)
        one_store = blocks([cache / "bytecode"])
        run(MORE, env)
        cells_only = [p for p in cache.iterdir() if p.name != "channels"]
        eight_counted = blocks([cache, pkgs])
        eight_all = blocks([cache, pkgs], interpreter_bytecode(cache))
        eight_cells = blocks(cells_only)
        eight_cells_over_shared = eight_all - blocks(shared)
        breakdown = where(cache)
        least = floor(cache, pkgs, interpreter_bytecode(cache))
        least_no_pyc = floor(cache, pkgs, interpreter_bytecode(cache), bytecode=False)
        one_no_pyc = one_all - one_store
    mb = 1 / 1e6
    print(f"demo cells: 1 = {FIRST}; 8 = it and {', '.join(MORE)}")
    print(f"  everything (cache root + package cache): 1 cell {one_all * mb:6.1f} MB, "
          f"8 cells {eight_all * mb:6.1f} MB, ratio {eight_all / one_all:.2f} (target <= 1.2)")
    print(f"  the same, counting links to the interpreters' own bytecode: 1 cell "
          f"{one_counted * mb:5.1f} MB, 8 cells {eight_counted * mb:5.1f} MB, ratio "
          f"{eight_counted / one_counted:.2f}")
    print(f"  cells alone (hard links to the package cache counted there): 1 cell "
          f"{one_cells_over_shared * mb:5.2f} MB, 8 cells {eight_cells_over_shared * mb:5.2f} MB "
          f"({eight_cells_over_shared / 8 * mb:.2f} MB per cell)")
    print(f"  cells counted alone (their files as if not shared): 1 cell {one_cells * mb:5.1f} MB, "
          f"8 cells {eight_cells * mb:5.1f} MB")
    print(f"  floor, if the 8 cells kept only what they share, their own test prefixes and one "
          f"host prefix per host solve: {least * mb:5.1f} MB, ratio {least / one_all:.2f}")
    print(f"  the same floor without the shared bytecode (every test run compiles from source): "
          f"{least_no_pyc * mb:5.1f} MB vs. {one_no_pyc * mb:5.1f} MB, ratio "
          f"{least_no_pyc / one_no_pyc:.2f}")
    print("  where the 8 cells' blocks go:")
    for label, size in breakdown.most_common(12):
        print(f"    {label:<36} {size * mb:6.2f} MB")


if __name__ == "__main__":
    main()
