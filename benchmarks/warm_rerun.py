"""Warm re-run overhead: `harness test CELL` on an unchanged cell vs. its test command run directly.

Run: python benchmarks/warm_rerun.py [--cell py312-cu13] [--runs 15]

`harness` is the installed command (the script beside this interpreter), as
a user types it.  Both sides run in a fresh process per repetition, in the
same prefix, with the same environment (rebuilt from the cell's warm-start
snapshot by the function the warm start itself uses) and the same working
directory; their output goes to a pipe that is read and dropped.
Repetitions alternate, and medians are compared.  Targets: ratio <= 1.1,
overhead <= 150 ms.

It then shows where a warm run's time goes (in this process, so imports are
measured in a fresh interpreter): interpreter start-up, the imports before the
test command starts and those made while it runs (on a second core), reading
and checking the snapshot (stat of every input), and, for comparison, what
the full path would spend on the same unchanged cell (compile, prepare with
every stage cached: locks, prefixes, source fingerprint).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrices" / "demo.toml"


HARNESS = Path(sys.executable).parent / "harness"


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(HARNESS), *args], cwd=ROOT, env=env, capture_output=True, check=False)


def compile_harness() -> None:
    """Byte-compile the harness as ``pip install`` does (this checkout may run with
    ``PYTHONDONTWRITEBYTECODE``, which would add compiling every module to each run)."""
    import compileall

    compileall.compile_dir(ROOT / "harness", quiet=1)


def warm_up(cell: str) -> dict:
    """Run the cell until its warm-start snapshot is trusted (inputs older than the racy window)."""
    compile_harness()
    from harness.warm import Invocation
    from harness.warmstart import read_snapshot, stale

    argv = ["test", "--from", str(MATRIX), cell, "-q"]
    text = Invocation((str(MATRIX),), (cell,), "skip").material()
    reason = "no snapshot"
    for _ in range(4):
        done = harness(*argv)
        if done.returncode != 0:
            sys.exit(f"harness test {cell} failed:\n{done.stdout.decode()}\n{done.stderr.decode()}")
        snapshot = read_snapshot(text)
        reason = "no snapshot" if snapshot is None else stale(snapshot)
        if reason is None:
            return snapshot
        time.sleep(2.1)  # let the racy window pass, then record again
    sys.exit(f"the warm-start snapshot of {cell} never became valid: {reason}")


def timed(argv: list[str], *, env: dict[str, str] | None, cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv} failed:\n{proc.stdout.decode()[-2000:]}")
    return elapsed


def breakdown(snapshot: dict, cell: str) -> list[tuple[str, float]]:
    """Seconds per part of a warm run, and of the full path on the same cell."""
    from harness.warmstart import command_argv, command_env, read_snapshot, stale

    rows: list[tuple[str, float]] = []
    py = [sys.executable, "-c"]
    base = min(timed([*py, "pass"], env=None, cwd=ROOT) for _ in range(15))
    rows.append(("interpreter start-up", base))
    before = "import harness.cli, harness.warmstart, harness.launch"
    after = before + ", harness.warm, harness.execute, harness.summary, harness.cache, harness.report"
    first = min(timed([*py, before], env=None, cwd=ROOT) for _ in range(15)) - base
    rows.append(("imports before the tests start", first))
    rows.append(("imports while the tests run (overlapped)",
                 min(timed([*py, after], env=None, cwd=ROOT) for _ in range(15)) - base - first))
    start = time.perf_counter()
    for _ in range(20):
        again = read_snapshot(snapshot["material"])
        assert again is not None and stale(again) is None
    rows.append(("read and check the snapshot (stat every input)", (time.perf_counter() - start) / 20))
    start = time.perf_counter()
    for _ in range(20):
        command_env(snapshot["cells"][0], "test")
        command_argv(snapshot["cells"][0], "test")
    rows.append(("rebuild the activated environment", (time.perf_counter() - start) / 20))
    full_imports = "import harness.cli, harness.commands, harness.pipeline, harness.doctor, harness.premerge, harness.ci"
    rows.append(("full path: imports", min(timed([*py, full_imports], env=None, cwd=ROOT) for _ in range(3)) - base))
    from harness.cache import Cache
    from harness.loader import find_cells
    from harness.pipeline import register_offline
    from harness.report import RunReport
    from harness.stages import prepare

    start = time.perf_counter()
    (c,) = find_cells([cell], [MATRIX])
    rows.append(("full path: compile the matrix", time.perf_counter() - start))
    cache = Cache.for_manifest(c.manifest)
    start = time.perf_counter()
    register_offline(cache)
    rows.append(("full path: confirm the offline channel", time.perf_counter() - start))
    start = time.perf_counter()
    prepare(c, cache=cache, report=RunReport())
    rows.append(("full path: prepare, every stage cached", time.perf_counter() - start))
    from harness.build.source import source_fingerprint

    start = time.perf_counter()
    source_fingerprint(c.package.source_dir, exclude=(cache.root,))
    rows.append(("  of which: source fingerprint", time.perf_counter() - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="py312-cu13")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    snapshot = warm_up(args.cell)
    from harness.warmstart import command_argv, command_env

    cell = snapshot["cells"][0]
    plan = cell["plan"]
    direct_env = command_env(cell, "test")
    direct_argv = command_argv(cell, "test")
    cwd = Path(plan["cwd"])
    harness_argv = [str(HARNESS), "test", "--from", str(MATRIX), args.cell, "-q"]

    direct: list[float] = []
    through: list[float] = []
    for _ in range(args.runs):
        direct.append(timed(direct_argv, env=direct_env, cwd=cwd))
        through.append(timed(harness_argv, env=None, cwd=ROOT))
    d, h = statistics.median(direct), statistics.median(through)
    print(f"cell {args.cell}: `{plan['command']}` in {cwd}, {args.runs} alternating runs, medians")
    print(f"  direct (same prefix, same environment): {d * 1000:7.1f} ms")
    print(f"  harness test (warm start):               {h * 1000:7.1f} ms")
    print(f"  ratio {h / d:.3f} (target <= 1.1)   overhead {(h - d) * 1000:+.1f} ms (target <= 150 ms)")
    print("where a warm run's time goes (and what the full path would spend):")
    for label, seconds in breakdown(snapshot, args.cell):
        print(f"  {label:<42} {seconds * 1000:7.1f} ms")
    os._exit(0)  # rattler's threads (loaded by the breakdown) can trip interpreter shutdown


if __name__ == "__main__":
    main()
