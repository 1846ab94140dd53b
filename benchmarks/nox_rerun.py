"""Warm re-run through nox: `nox -s "test(CELL)"` vs. a plain nox session running the same command.

Run: python benchmarks/nox_rerun.py [--cell py312-cu13] [--runs 9]

The plain session is `@nox.session(venv_backend="none")` calling
`session.run(<the cell's test command>, env=<the same environment>)` from the
cell's source directory: nox's own start-up is on both sides, so the
difference is what the harness adds.  Medians of alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warm_rerun import ROOT, timed, warm_up

PLAIN_NOXFILE = '''
import json
import nox

ARGV = json.loads({argv!r})
ENV = json.loads({env!r})
CWD = {cwd!r}


@nox.session(venv_backend="none")
def plain(session):
    session.chdir(CWD)
    session.run(*ARGV, env=ENV, external=True)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="py312-cu13")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    snapshot = warm_up(args.cell)
    from harness.warmstart import command_argv, command_env

    cell = snapshot["cells"][0]
    env = command_env(cell, "test")
    argv = command_argv(cell, "test")
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]  # nox looks programs up itself
    nox = str(Path(sys.executable).parent / "nox")
    with tempfile.TemporaryDirectory() as tmp:
        noxfile = Path(tmp) / "noxfile.py"
        noxfile.write_text(
            PLAIN_NOXFILE.format(
                argv=json.dumps(argv), env=json.dumps(env), cwd=cell["plan"]["cwd"]
            )
        )
        plain_argv = [nox, "-f", str(noxfile), "-s", "plain"]
        harness_argv = [nox, "-f", str(ROOT / "noxfile.py"), "-s", f"test({args.cell})"]
        timed(harness_argv, env=None, cwd=ROOT)  # the session's own command line gets its record
        warm_up(args.cell)
        plain: list[float] = []
        through: list[float] = []
        for _ in range(args.runs):
            plain.append(timed(plain_argv, env=None, cwd=ROOT))
            through.append(timed(harness_argv, env=None, cwd=ROOT))
    p, h = statistics.median(plain), statistics.median(through)
    print(f"cell {args.cell} through nox, {args.runs} alternating runs, medians")
    print(f"  nox plain session (venv_backend='none', same command and env): {p * 1000:7.1f} ms")
    print(f"  nox -s 'test({args.cell})' (harness, warm start):               {h * 1000:7.1f} ms")
    print(f"  ratio {h / p:.3f}   harness adds {(h - p) * 1000:+.1f} ms")
    os._exit(0)


if __name__ == "__main__":
    main()
