"""Visible progress while cells are solved, installed, built and tested.

Solving, installing and building can take minutes; a silent terminal looks
hung.  :class:`ConsoleProgress` is fed by the run report (``start`` when a
stage begins, ``end`` when it is recorded) and writes to stderr, so stdout
stays free for test output and machine-readable results.  On a terminal it
shows a spinner naming what is running; in a CI log, where a spinner would
be noise, it writes one plain line per finished stage, and a start line for
the stage kinds that usually take long, so a log cut off by a timeout still
says what was running.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported when a console is made: plain lines need none of it
    from rich.console import Console
    from rich.status import Status

LONG_STAGES = frozenset({"solve", "install", "build", "test"})
PREFIX = "[harness]"
_STATUS_STYLES = {"done": "green", "cached": "dim", "failed": "bold red", "skipped": "yellow"}


def _kind(stage: str) -> str:
    return stage.split(":", 1)[0]


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


def stage_line(cell: str, stage: str, status: str, reason: str, duration: float) -> str:
    """``[harness] py312-cu13 build done (3.2s): <reason>`` (first line of the reason only)."""
    line = f"{PREFIX} {cell} {stage} {status} ({duration:.1f}s)"
    reason = _first_line(reason)
    return f"{line}: {reason}" if reason else line


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class ConsoleProgress:
    """Stage progress on stderr: a spinner on a terminal, plain lines elsewhere (thread-safe).

    It is a :class:`harness.report.StageListener`: ``RunReport(listener=...)``
    calls :meth:`start` and :meth:`end` around every stage.

    ``stream`` defaults to ``sys.stderr``; ``interactive`` overrides the
    terminal detection; ``quiet`` prints nothing at all.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.quiet = quiet
        self._stream = stream if stream is not None else sys.stderr
        self.interactive = _is_terminal(self._stream) if interactive is None else interactive
        self._console: Console | None = None
        if self.interactive:
            from rich.console import Console

            self._console = Console(file=self._stream, highlight=False, soft_wrap=True)
        self._lock = threading.RLock()
        self._running: dict[tuple[str, str], None] = {}  # insertion-ordered set
        self._status: Status | None = None

    def start(self, cell: str, stage: str) -> None:
        with self._lock:
            self._running[(cell, stage)] = None
            if self.quiet:
                return
            if self._console is not None:
                self._refresh()
            elif _kind(stage) in LONG_STAGES:
                self._write(f"{PREFIX} {cell} {stage} ...")

    def end(self, cell: str, stage: str, status: str, reason: str, duration: float) -> None:
        with self._lock:
            self._running.pop((cell, stage), None)
            if self.quiet:
                return
            line = stage_line(cell, stage, status, reason, duration)
            if self._console is not None:
                from rich.text import Text

                text = Text(line)
                style = _STATUS_STYLES.get(status)
                if style:
                    text.stylize(style, len(f"{PREFIX} {cell} {stage} "), len(line))
                self._console.print(text)
                self._refresh()
            else:
                self._write(line)

    def close(self) -> None:
        """Remove the spinner (stages that never ended are simply no longer shown)."""
        with self._lock:
            self._running.clear()
            self._stop()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def _refresh(self) -> None:
        if not self._running:
            self._stop()
            return
        text = ", ".join(f"{cell} · {stage}" for cell, stage in self._running) + " ..."
        if self._status is None:
            assert self._console is not None
            from rich.text import Text

            self._status = self._console.status(Text(text))
            self._status.start()
        else:
            from rich.text import Text

            self._status.update(Text(text))

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
