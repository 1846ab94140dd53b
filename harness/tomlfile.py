"""Read TOML 1.1 documents (tomli>=2.4) and find the line a key path is written on.

tomli returns plain dicts without positions, so errors point at a line found by
scanning the text for the key's table header or assignment.  That is enough for
``file:line: key: message`` and costs nothing unless an error is raised.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli

from harness.errors import HarnessError, ManifestError

#: Manifests and matrix files are kilobytes; a larger file is a wrong path, not a manifest.
MAX_TOML_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TomlDocument:
    """A parsed TOML file together with its text, for error locations."""

    path: Path
    text: str
    data: dict[str, Any] = field(hash=False, compare=False)

    def line_of(self, key: tuple[str | int, ...] | list[str | int]) -> int | None:
        """Best-effort 1-based line where ``key`` is defined."""
        return locate(self.text, tuple(str(k) for k in key if not isinstance(k, int)))

    def error(
        self,
        message: str,
        key: tuple[str | int, ...] | list[str | int] = (),
        *,
        hint: str | None = None,
        cls: type[HarnessError] = ManifestError,
    ) -> HarnessError:
        """Build an error that points at ``key`` in this file."""
        return cls(
            message,
            file=self.path,
            key=list(key) or None,
            line=self.line_of(tuple(key)) if key else None,
            hint=hint,
        )


def read_toml(path: Path, *, cls: type[HarnessError] = ManifestError) -> TomlDocument:
    """Parse ``path``; a syntax error becomes a HarnessError with its line."""
    from harness import inputs

    inputs.note(path)
    try:
        # stat first: opening a FIFO would block, reading /dev/zero would never end
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise cls("not a regular file", file=path,
                      hint="point at a TOML file (a directory means its pixi.toml or matrices/)")
        if info.st_size > MAX_TOML_BYTES:
            raise cls(f"the file has {info.st_size} bytes; TOML files over {MAX_TOML_BYTES} are refused",
                      file=path, hint="a manifest or matrix file is a few kilobytes: check the path")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOML_BYTES + 1)
        if len(raw) > MAX_TOML_BYTES:
            raise cls(f"the file grew past {MAX_TOML_BYTES} bytes while it was read", file=path)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise cls("file not found", file=path, hint="check the path") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, bytes that are not UTF-8
        raise cls(f"cannot read the file: {exc}", file=path) from None
    return parse_toml(text, path, cls=cls)


def parse_toml(text: str, path: Path, *, cls: type[HarnessError] = ManifestError) -> TomlDocument:
    """Parse TOML text that claims to come from ``path``."""
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        msg = getattr(exc, "msg", str(exc))
        raise cls(f"invalid TOML: {msg}", file=path, line=line, hint="fix the TOML syntax") from None
    except RecursionError as exc:  # tomli's own limit on nested arrays and inline tables
        raise cls(f"invalid TOML: {exc}", file=path, hint="flatten the nested arrays or tables") from None
    return TomlDocument(path=path, text=text, data=data)


def resolve_path(path: Path) -> Path:
    """``path`` made absolute with symlinks resolved; a symlink loop stays unresolved.

    ``Path.resolve`` raises ``RuntimeError`` on a loop before Python 3.13; the
    unresolved path then fails to read with "too many levels of symbolic
    links", which the readers report as a user error naming it.
    """
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return Path(os.path.abspath(path))


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(key: str) -> tuple[str, ...]:
    """Split a TOML dotted key, honouring quotes: ``a."b.c".d`` -> (a, b.c, d)."""
    parts: list[str] = []
    buf = ""
    quote: str | None = None
    for ch in key:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return tuple(parts)


def locate(text: str, key: tuple[str, ...]) -> int | None:
    """Find the 1-based line of ``key``: its own header, an assignment under the
    longest matching header, or a dotted assignment.  ``None`` when not found."""
    if not key:
        return None
    lines = text.splitlines()
    table: tuple[str, ...] = ()
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, raw in enumerate(lines, start=1):
        header = _HEADER.match(raw)
        if header:
            table = _split_dotted(header.group(1))
            n = _common(table, key)
            if n == len(table) and n and (best is None or n > best[0]):
                best = (n, number)
            continue
        assign = re.match(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=", raw)
        if not assign:
            continue
        full = table + _split_dotted(assign.group(1))
        n = _common(full, key)
        if n == len(full) or n == len(key):
            if n and (best is None or n > best[0]):
                best = (n, number)
        elif n > len(table) and (best is None or n > best[0]):
            best = (n, number)
    if best is None:
        for number, raw in enumerate(lines, start=1):
            if key[-1] and key[-1] in raw:
                return number
        return None
    return best[1]


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
