"""Run ``prepare`` on a pickled (cell, cache) in its own process; used by the concurrency tests.

Usage: ``python _prepare_runner.py JOB_DIR``.  Reads ``JOB_DIR/input.pickle``,
touches ``JOB_DIR/started`` just before ``prepare``, and writes
``JOB_DIR/result.json`` with the report's stages and whether each prefix is
complete.  Exits through ``safe_exit`` (rattler's exit-time crash).
"""

from __future__ import annotations

import json
import pickle
import sys
import traceback
from pathlib import Path

from harness.prefix import verify_prefix
from harness.report import RunReport
from harness.stages import prepare, safe_exit


def main() -> int:
    job = Path(sys.argv[1])
    cell, cache = pickle.loads((job / "input.pickle").read_bytes())
    report = RunReport()
    (job / "started").write_text("")
    try:
        prepared = prepare(cell, cache=cache, report=report)
    except Exception:
        traceback.print_exc()
        return 1
    problems = {
        role: verify_prefix(prefix, prepared.records[role])
        for role, prefix in prepared.prefixes.items()
    }
    result = {
        "stages": [[r.stage, r.status, r.reason] for r in report.results],
        "problems": problems,
    }
    (job / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    safe_exit(main())
