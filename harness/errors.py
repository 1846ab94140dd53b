"""One error family for everything a user can get wrong.

Every user-facing failure is a :class:`HarnessError` that says *where* (file,
key path, line) and *what to do* (hint).  The CLI prints ``str(error)`` and
exits 2; nothing a user writes may end in a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def format_key(key: str | Sequence[str | int] | None) -> str | None:
    """Render a key path the way TOML spells it: ``feature.py312.dependencies``."""
    if key is None:
        return None
    if isinstance(key, str):
        return key
    parts: list[str] = []
    for part in key:
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        text = str(part)
        bare = text and all(c.isalnum() or c in "-_" for c in text)
        parts.append(("." if parts else "") + (text if bare else f'"{text}"'))
    return "".join(parts)


class HarnessError(Exception):
    """A problem the user can fix; the message names the file, key and a hint."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        key: str | Sequence[str | int] | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = Path(file) if file is not None else None
        self.key = format_key(key)
        self.line = line
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.key:
            where += f"{self.key}: "
        text = where + self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ManifestError(HarnessError):
    """A pixi manifest that pixi itself would reject, or that the harness cannot use."""


class MatrixError(HarnessError):
    """A matrix file that does not describe a well-formed set of cells."""


class CellError(HarnessError):
    """A cell that cannot be compiled (ambiguous variant, unknown id, ...)."""


class SolveError(HarnessError):
    """A cell whose environment cannot be solved."""


class InstallError(HarnessError):
    """A prefix that cannot be installed (bad archive, checksum mismatch, ...)."""


class BuildError(HarnessError):
    """A build that failed: names the command and shows the log's tail."""


class ChannelError(HarnessError):
    """The offline channel could not be built or read."""


class RunError(HarnessError):
    """The test command of a cell could not be started."""
