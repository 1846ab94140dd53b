"""Time to compile and list a generated 1,000-cell matrix (target: <= 0.3 s).

Run: python benchmarks/list_1000.py
Prints the wall time of `harness list --ids` (the installed command) in a fresh process
(median of 5) and of the compile step alone, and their ratio to the 0.3 s target.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warm_rerun import HARNESS, compile_harness

MANIFEST = """
[workspace]
channels = ["conda-forge"]
platforms = ["linux-64"]
preview = ["pixi-build"]
[workspace.build-variants]
python = ["3.10.*", "3.11.*", "3.12.*", "3.13.*", "3.14.*"]
cuda-version = [{cuda}]
[dependencies]
pkg = {{ path = "." }}
[package]
name = "pkg"
version = "1.0"
[package.build]
backend = {{ name = "pixi-build-python", version = "*" }}
[package.host-dependencies]
python = "*"
cuda-version = "*"
"""

MATRIX = """
manifest = "pixi.toml"
name = "py{python}-cu{cuda}-{blas}"
profiles = ["dev", "release"]
[axes.python]
values = ["3.10", "3.11", "3.12", "3.13", "3.14"]
dependencies = { python = "{value}.*" }
[axes.cuda]
values = [CUDA]
dependencies = { cuda-version = "{value}.*" }
system-requirements = { cuda = "{value}" }
[axes.blas]
values = ["openblas", "mkl", "blis", "accelerate", "netlib"]
env = { BLAS = "{value}" }
"""

RUNS = 5


def main() -> None:
    compile_harness()  # as an installed harness is: no module compiled from source per run
    cudas = [f"12.{i}" for i in range(10)] + [f"13.{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pixi.toml").write_text(MANIFEST.format(cuda=", ".join(f'"{c}.*"' for c in cudas)))
        (root / "m.toml").write_text(MATRIX.replace("CUDA", ", ".join(f'"{c}"' for c in cudas)))
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            out = subprocess.run([str(HARNESS), "list", "--ids", str(root / "m.toml")],
                                 capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - start)
        process = statistics.median(times)
        n = len(out.stdout.split())
        from harness.loader import compile_path

        start = time.perf_counter()
        cells = compile_path(root / "m.toml").cells
        compile_only = time.perf_counter() - start
    assert n == len(cells) == 1000, n
    print(f"cells listed:              {n}")
    print(f"harness list (process, median of {RUNS}): {process:.3f} s   ratio to 0.3 s target: {process / 0.3:.2f}")
    print(f"compile only (in process): {compile_only:.3f} s   ratio to 0.3 s target: {compile_only / 0.3:.2f}")


if __name__ == "__main__":
    main()
