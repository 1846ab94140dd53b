"""The wheelhouse: a directory of pure wheels the channel is converted from.

For each channel python the closure of the requirements is fetched once with
``sys.executable -m pip download --only-binary=:all: --python-version X.Y.Z``
into the wheelhouse, and the chosen file names are recorded in
``.closures/py<version>-<hash of requirements>.json``. Later builds read that
record and never run pip: a second build needs no network.

pip has one blind spot here: it evaluates environment markers for *its own*
interpreter, so a 3.11 pip downloading for 3.8 leaves out ``tomli`` and
``exceptiongroup`` (``python_version < "3.11"``). A small resolver walks the
closure with markers evaluated for the target python and fetches whatever is
missing, until nothing is. The same resolver lets a pre-filled wheelhouse
(``HARNESS_WHEELHOUSE``) work without network when pip cannot reach an index.

The resolver is greedy (highest version that satisfies the constraints seen
so far and the python's ``Requires-Python``). That is enough for the small,
well-behaved closures it is used for; pip does the real resolution.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from harness.channel.atomic import write_json
from harness.channel.pythons import PythonInfo
from harness.channel.wheels import WheelMeta, conda_name, is_pure_tag, marker_applies, read_wheel
from harness.errors import ChannelError, HarnessError

#: What every channel python gets by default: enough to build and test a package.
DEFAULT_REQUIREMENTS: tuple[str, ...] = ("pip", "setuptools", "wheel", "pytest")

#: Bump when the meaning of a recorded closure (``.closures/*.json``) changes.
CLOSURE_VERSION = 1

#: Seconds one ``pip download`` may take.
PIP_TIMEOUT = 900


def default_wheelhouse() -> Path:
    """``$HARNESS_WHEELHOUSE``, else ``~/.cache/variant-harness/wheels`` (XDG aware)."""
    env = os.environ.get("HARNESS_WHEELHOUSE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "variant-harness" / "wheels"


def parse_requirements(requirements: Iterable[str]) -> tuple[Requirement, ...]:
    """Parse PEP 508 requirement strings; a bad one is a ChannelError."""
    out: list[Requirement] = []
    for text in requirements:
        try:
            out.append(Requirement(text))
        except InvalidRequirement as exc:
            raise ChannelError(
                f"invalid requirement {text!r}: {exc}",
                hint="use PEP 508 syntax, for example 'pytest>=8' or 'tomli; python_version < \"3.11\"'",
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class Resolution:
    """The closure of the requirements for one python, from the wheelhouse."""

    python: PythonInfo
    wheels: tuple[WheelMeta, ...]
    missing: tuple[str, ...]


def _version(meta: WheelMeta) -> Version:
    try:
        return meta.pep440_version
    except InvalidVersion:
        return Version("0")


def resolve(
    requirements: Sequence[Requirement], available: Sequence[WheelMeta], py: PythonInfo
) -> Resolution:
    """Greedy closure of ``requirements`` for ``py`` using only ``available`` wheels."""
    by_name: dict[str, list[WheelMeta]] = {}
    for meta in available:
        if meta.python_ok(py):
            by_name.setdefault(meta.name, []).append(meta)
    for metas in by_name.values():
        metas.sort(key=_version, reverse=True)

    constraints: dict[str, list[Requirement]] = {}
    extras: dict[str, set[str]] = {}
    picks: dict[str, WheelMeta] = {}
    missing: dict[str, str] = {}
    queue: deque[tuple[Requirement, frozenset[str]]] = deque((r, frozenset()) for r in requirements)
    steps = 0
    while queue and steps < 10_000:
        steps += 1
        req, parent_extras = queue.popleft()
        if not marker_applies(req.marker, py, parent_extras):
            continue
        name = conda_name(req.name)
        cons = constraints.setdefault(name, [])
        cons.append(req)
        had = extras.setdefault(name, set())
        grew = not set(req.extras) <= had
        had |= set(req.extras)
        current = picks.get(name)
        if current is not None and all(
            r.specifier.contains(_version(current), prereleases=True) for r in cons
        ):
            if grew:
                queue.extend((Requirement(d), frozenset(had)) for d in current.requires_dist)
            continue
        choice = next(
            (
                m
                for m in by_name.get(name, [])
                if all(r.specifier.contains(_version(m)) for r in cons)
            ),
            None,
        )
        if choice is None:
            picks.pop(name, None)
            spec = ",".join(str(r.specifier) for r in cons if str(r.specifier))
            extra = f"[{','.join(sorted(had))}]" if had else ""
            missing[name] = f"{req.name}{extra}{spec}"
            continue
        missing.pop(name, None)
        picks[name] = choice
        for dep in choice.requires_dist:
            try:
                queue.append((Requirement(dep), frozenset(had)))
            except InvalidRequirement:
                continue
    return Resolution(
        python=py,
        wheels=tuple(picks[n] for n in sorted(picks)),
        missing=tuple(missing[n] for n in sorted(missing)),
    )


class _WheelIndex:
    """Wheel metadata of a directory, re-read only for files that changed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[tuple[int, int], WheelMeta | None]] = {}

    def get(self, name: str) -> WheelMeta | None:
        """Metadata of ``directory/name``; None if missing, unreadable or not pure."""
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:
            return None
        ident = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(name)
        if cached is None or cached[0] != ident:
            meta: WheelMeta | None = None
            if is_pure_tag(name):
                try:
                    meta = read_wheel(path)
                except HarnessError:
                    meta = None  # unreadable: ignore it, pip may fetch a good copy
            cached = (ident, meta)
            self._cache[name] = cached
        return cached[1]

    def load(self) -> list[WheelMeta]:
        """Every readable pure wheel in the directory."""
        metas = (self.get(p.name) for p in sorted(self.directory.glob("*.whl")))
        return [m for m in metas if m is not None]


def run_pip(
    args: Sequence[str], *, timeout: float = PIP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable -m pip <args>`` (one place, so tests can count calls)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def pip_download(requirements: Sequence[str], py: PythonInfo, wheelhouse: Path) -> list[str]:
    """Download wheels for ``requirements`` (and their closure) for ``py``.

    Returns the file names pip chose (all of them are then in the wheelhouse).
    pip writes into a private temporary directory; finished files are moved
    into the wheelhouse with a rename, so an interrupted download never leaves
    a truncated wheel behind.
    """
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheelhouse) as tmp:
        args = [
            "download",
            "--only-binary=:all:",
            "--python-version",
            py.version,
            "--find-links",
            str(wheelhouse),
            "--progress-bar",
            "off",
            "--dest",
            tmp,
            *requirements,
        ]
        try:
            proc = run_pip(args)
        except subprocess.TimeoutExpired:
            raise ChannelError(
                f"pip download for Python {py.minor} timed out after {PIP_TIMEOUT} s",
                hint="check network access to PyPI, or pre-fill the wheelhouse "
                f"({wheelhouse}, or set HARNESS_WHEELHOUSE)",
            ) from None
        except OSError as exc:
            raise ChannelError(f"could not run pip: {exc}") from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            errors = [ln for ln in lines if "ERROR" in ln] or lines[-5:]
            raise ChannelError(
                f"pip download for Python {py.minor} failed ({' '.join(requirements)}):\n    "
                + "\n    ".join(errors[-5:]),
                hint="check network access to PyPI, or pre-fill the wheelhouse "
                f"{wheelhouse} (or set HARNESS_WHEELHOUSE) with `pip download "
                f"--only-binary=:all: --python-version {py.minor} -d <dir> ...` on a "
                "machine that has network",
            )
        names: list[str] = []
        for path in sorted(Path(tmp).glob("*.whl")):
            dest = wheelhouse / path.name
            if not dest.exists():
                shutil.move(str(path), str(dest))
            names.append(path.name)
        return names


def _closure_path(wheelhouse: Path, py: PythonInfo, requirements: Sequence[str]) -> Path:
    text = json.dumps([CLOSURE_VERSION, py.version, sorted(requirements)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return wheelhouse / ".closures" / f"py{py.version}-{digest}.json"


def _read_closure(path: Path) -> list[str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return [str(f) for f in files] if isinstance(files, list) else None


def _resolve_for(
    roots: Sequence[Requirement],
    requirements: Sequence[str],
    py: PythonInfo,
    wheelhouse: Path,
    index: _WheelIndex,
    say: Callable[[str], None],
) -> Resolution:
    """The closure for one python: recorded, else fetched with pip, else the wheelhouse."""
    record = _closure_path(wheelhouse, py, requirements)
    recorded = _read_closure(record)
    if recorded is not None:
        metas = [index.get(name) for name in recorded]
        if all(m is not None for m in metas):
            res = resolve(roots, [m for m in metas if m is not None], py)
            if not res.missing:
                return res
    say(f"downloading wheels for Python {py.version}: {' '.join(requirements)}")
    try:
        pool = set(pip_download(requirements, py, wheelhouse))
    except ChannelError as exc:
        # No network: a pre-filled wheelhouse that satisfies everything will do.
        res = resolve(roots, index.load(), py)
        if res.missing:
            raise exc from None
        say(f"pip failed; using the wheels already in {wheelhouse} for Python {py.version}")
    else:
        tried: set[str] = set()
        for _round in range(8):
            res = resolve(roots, [m for m in map(index.get, sorted(pool)) if m is not None], py)
            if not res.missing:
                break
            # pip evaluated markers for *its own* python; fetch what this one needs too.
            todo = [m for m in res.missing if m not in tried]
            if not todo:
                break
            tried.update(todo)
            say(f"downloading wheels for Python {py.version}: {' '.join(todo)}")
            pool.update(pip_download(todo, py, wheelhouse))
        if res.missing:
            raise ChannelError(
                f"no pure-Python wheel for Python {py.version} satisfies: "
                + ", ".join(res.missing),
                hint="only *-none-any wheels can go into the offline channel; drop the "
                f"requirement or put a suitable wheel into {wheelhouse}",
            )
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        record,
        {
            "python": py.version,
            "requirements": sorted(requirements),
            "files": [m.path.name for m in res.wheels],
        },
    )
    return res


def ensure_wheels(
    requirements: Sequence[str],
    pythons: Sequence[PythonInfo],
    wheelhouse: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Resolution]:
    """The closure of ``requirements`` for every python, downloading what is missing.

    Returns one :class:`Resolution` per minor version. Holds a lock on the
    wheelhouse, so two builds sharing it never download into each other.
    """
    roots = parse_requirements(requirements)
    if not roots or not pythons:
        return {}
    try:
        wheelhouse.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChannelError(
            f"cannot create the wheelhouse {wheelhouse}: {exc}",
            hint="set HARNESS_WHEELHOUSE to a writable directory",
        ) from None
    say = progress or (lambda _msg: None)
    index = _WheelIndex(wheelhouse)
    reqs = sorted({str(r) for r in roots})
    with FileLock(str(wheelhouse / ".lock")):
        for stale in wheelhouse.glob(".download-*"):  # from a killed pip download
            shutil.rmtree(stale, ignore_errors=True)
        return {py.minor: _resolve_for(roots, reqs, py, wheelhouse, index, say) for py in pythons}
