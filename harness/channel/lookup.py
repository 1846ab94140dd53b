"""Does the offline channel have a python for this cell?

A matrix may ask for Python versions the machine does not have (3.14 on a
runner with pyenv 3.10-3.13). That is not an error of the matrix: the cell is
skipped, with a reason that says what was asked for and what exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.channel.offline import OfflineChannel
from harness.channel.pythons import PythonInfo
from harness.errors import ChannelError

_MINOR_ONLY = re.compile(r"^(?:==)?\s*(\d+\.\d+)(?:\.\*)?$")
_BARE = re.compile(r"^\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class PythonMatch:
    """The outcome of :func:`find_python`; falsy when nothing matches."""

    spec: str
    python: PythonInfo | None
    available: tuple[str, ...]

    @property
    def found(self) -> bool:
        return self.python is not None

    def __bool__(self) -> bool:
        return self.found

    @property
    def reason(self) -> str | None:
        """A skip reason such as ``no CPython 3.14 on this machine (found 3.12, 3.13)``."""
        if self.found:
            return None
        m = _MINOR_ONLY.match(self.spec)
        wanted = m.group(1) if m else f"matching '{self.spec}'"
        found = ", ".join(self.available) if self.available else "none"
        return f"no CPython {wanted} on this machine (found {found})"


def _normalise(spec: str) -> str:
    text = spec.strip()
    if text.startswith("python"):
        text = text[len("python") :].strip()
    if not text:
        return "*"
    if _BARE.match(text):
        return text + ".*"  # "3.12" means any 3.12.x, as in a conda match spec
    return text


def find_python(channel: OfflineChannel | Sequence[PythonInfo], spec: str) -> PythonMatch:
    """The newest channel python whose exact version matches ``spec``.

    ``spec`` is a conda version spec (``3.14.*``, ``>=3.11,<3.13``, ``3.12``)
    optionally prefixed with ``python``.
    """
    from rattler import Version, VersionSpec
    from rattler.exceptions import InvalidVersionSpecError

    pythons = channel.pythons if isinstance(channel, OfflineChannel) else tuple(channel)
    text = _normalise(spec)
    try:
        vspec = VersionSpec(text)
    except InvalidVersionSpecError as exc:
        raise ChannelError(
            f"invalid python version spec {spec!r}: {exc}",
            hint="use a conda version spec such as '3.12.*' or '>=3.11,<3.13'",
        ) from None
    matching = [p for p in pythons if vspec.matches(Version(p.version))]
    best = max(matching, key=lambda p: p.version_tuple, default=None)
    minors = tuple(
        sorted({p.minor for p in pythons}, key=lambda m: tuple(int(x) for x in m.split(".")))
    )
    return PythonMatch(spec=text, python=best, available=minors)
