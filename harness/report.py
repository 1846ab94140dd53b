"""The run report: what each stage of each cell did, as counts tests can assert on.

DESIGN invariant 2 is stated in terms of this report: a second run of an
unchanged cell counts every stage as ``cached``.  Tests assert on
:meth:`RunReport.counts`, never on timings.  Stages are named
``solve:<role>``, ``install:<role>``, ``pypi``, ``activate`` (and later
``build``, ``test``); a stage's *kind* is the part before the colon.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from harness.cache import Cache, atomic_write_json

CACHED = "cached"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (CACHED, DONE, FAILED, SKIPPED)


@dataclass(frozen=True)
class StageResult:
    """One stage of one cell: its status, why, and how long it took."""

    cell: str
    stage: str
    status: str
    reason: str = ""
    duration: float = 0.0

    @property
    def kind(self) -> str:
        return self.stage.split(":", 1)[0]

    @property
    def role(self) -> str | None:
        parts = self.stage.split(":", 1)
        return parts[1] if len(parts) == 2 else None


class StageTimer:
    """Handed out by :meth:`RunReport.stage`; the stage body says how it ended."""

    def __init__(self) -> None:
        self.status = DONE
        self.reason = ""

    def cached(self, reason: str = "") -> None:
        self.status, self.reason = CACHED, reason

    def done(self, reason: str = "") -> None:
        self.status, self.reason = DONE, reason

    def skipped(self, reason: str = "") -> None:
        self.status, self.reason = SKIPPED, reason

    def failed(self, reason: str = "") -> None:
        """The stage ran and failed (failing tests): recorded without raising."""
        self.status, self.reason = FAILED, reason


class StageListener(Protocol):
    """Told when a stage starts and ends (the console progress display is one)."""

    def start(self, cell: str, stage: str) -> None: ...

    def end(self, cell: str, stage: str, status: str, reason: str, duration: float) -> None: ...


class RunReport:
    """Accumulates :class:`StageResult` values for one run (thread-safe)."""

    def __init__(self, listener: StageListener | None = None) -> None:
        self.started = time.time()
        self.pid = os.getpid()
        self.listener = listener
        self.extra: dict[str, Any] = {}  # per-cell test outcomes, artifacts... for the JSON file
        self._results: list[StageResult] = []
        self._lock = threading.Lock()

    def record(
        self, cell: str, stage: str, status: str, reason: str = "", duration: float = 0.0
    ) -> StageResult:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        result = StageResult(cell, stage, status, reason, round(duration, 6))
        with self._lock:
            self._results.append(result)
        return result

    @contextmanager
    def stage(self, cell: str, stage: str) -> Iterator[StageTimer]:
        """Time a stage; an exception records it as ``failed`` (with the message) and propagates."""
        timer = StageTimer()
        start = time.perf_counter()
        if self.listener is not None:
            self.listener.start(cell, stage)
        try:
            yield timer
        except BaseException as exc:
            reason = str(exc) or type(exc).__name__
            elapsed = time.perf_counter() - start
            self.record(cell, stage, FAILED, reason, elapsed)
            if self.listener is not None:
                self.listener.end(cell, stage, FAILED, reason.splitlines()[0], elapsed)
            raise
        elapsed = time.perf_counter() - start
        self.record(cell, stage, timer.status, timer.reason, elapsed)
        if self.listener is not None:
            self.listener.end(cell, stage, timer.status, timer.reason, elapsed)

    @property
    def results(self) -> tuple[StageResult, ...]:
        with self._lock:
            return tuple(self._results)

    def select(self, kind: str | None = None, cell: str | None = None) -> list[StageResult]:
        """Results of one stage kind (``solve``) or exact stage (``solve:test``), one cell or all."""
        out = []
        for r in self.results:
            if kind is not None and kind not in (r.kind, r.stage):
                continue
            if cell is not None and r.cell != cell:
                continue
            out.append(r)
        return out

    def counts(self, kind: str | None = None, cell: str | None = None) -> Counter[str]:
        """Status counts, e.g. ``report.counts("solve")["done"]``; missing statuses count 0."""
        return Counter(r.status for r in self.select(kind, cell))

    def summary(self) -> dict[str, dict[str, int]]:
        """``{kind: {status: n}}`` over the whole run, for the console and the JSON file."""
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            out.setdefault(r.kind, {}).setdefault(r.status, 0)
            out[r.kind][r.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "pid": self.pid,
            "summary": self.summary(),
            "stages": [asdict(r) for r in self.results],
            **self.extra,
        }

    def write(self, cache: Cache) -> Path:
        """Write ``reports/run-<timestamp>-<pid>.json`` atomically; returns its path."""
        cache.ensure()
        stamp = datetime.fromtimestamp(self.started, timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = cache.reports_dir / f"run-{stamp}-{self.pid}.json"
        atomic_write_json(path, self.to_json())
        return path
