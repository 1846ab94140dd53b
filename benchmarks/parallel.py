"""Four cold cells on two workers against the same four one at a time.

Run: python benchmarks/parallel.py [--jobs 2]

Each side starts from nothing but the offline channel (copied in with hard
links, so that building it is not part of either side): a fresh cache root
and a fresh conda package cache.  Both use `harness premerge`, which runs one
`harness test` process per cell, `-j 1` and `-j N`.  Every cell solves,
installs, compiles the C extension, installs the build and runs its tests.
Target: parallel <= 0.6 x serial with 2 workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrices" / "demo.toml"
CELLS = ["py312-cu12", "py312-cu13", "py313-cu12", "py313-cu13"]


def premerge(jobs: int, channel: Path, tmp: Path) -> float:
    cache = tmp / f"cache-j{jobs}"
    shutil.copytree(channel, cache / "channels" / "offline", copy_function=os.link)
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache), "HARNESS_PKGS_DIR": str(tmp / f"pkgs-j{jobs}")}
    argv = [sys.executable, "-m", "harness", "premerge", str(MATRIX), "-j", str(jobs)]
    for cell in CELLS:
        argv += ["-c", cell]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    out = proc.stdout.decode() + proc.stderr.decode()
    if proc.returncode != 0 or out.count("passed") < len(CELLS):
        sys.exit(f"premerge -j {jobs} failed:\n{out[-4000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        channel = tmp / "offline"
        subprocess.run(
            [sys.executable, "-m", "harness", "channel", "offline", "--root", str(channel)],
            cwd=ROOT, check=True, capture_output=True,
        )
        serial = premerge(1, channel, tmp)
        parallel = premerge(args.jobs, channel, tmp)
    print(f"{len(CELLS)} cold cells of the demo ({', '.join(CELLS)}), {os.cpu_count()} cores")
    print(f"  one at a time (-j 1): {serial:6.1f} s")
    print(f"  {args.jobs} workers (-j {args.jobs}):   {parallel:6.1f} s")
    print(f"  ratio {parallel / serial:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
