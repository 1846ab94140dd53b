"""Find the CPython interpreters on this machine that the channel can bridge.

Sources, in order: explicit paths, pyenv versions (``$PYENV_ROOT`` or
``~/.pyenv``), then ``python3.X`` on ``PATH`` (pyenv shims are skipped: they
resolve differently per directory and the versions they point to are
already scanned). Only CPython >= 3.8 with the default (GIL, non-debug) ABI
is kept, one per minor version: an explicit interpreter wins, then the
highest patch release.

Each candidate is run once to learn its exact version and base prefix. The
results are cached by the candidate's path and ``stat`` so an up-to-date check
spawns no process (the cache lives in the channel's stamp file).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ChannelError

#: Oldest minor version the channel bridges.
MIN_MINOR = (3, 8)

_NAME_RE = re.compile(r"^python3\.(\d+)$")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")

# Must run on any interpreter we might be pointed at (Python 2.7 included), so
# that a too-old one gives a clear error instead of a SyntaxError.
_PROBE = (
    "import json, os, platform, sys, sysconfig\n"
    "v = sys.version_info\n"
    "exe = sys.executable\n"
    "base = getattr(sys, 'base_prefix', sys.prefix)\n"
    "mm = '%d.%d' % (v[0], v[1])\n"
    "cand = os.path.join(base, 'bin', 'python' + mm)\n"
    "real = cand if os.path.isfile(cand) else os.path.realpath(exe)\n"
    "print(json.dumps({'impl': platform.python_implementation(),"
    " 'version': platform.python_version(), 'major': v[0], 'minor': v[1],"
    " 'base_prefix': base, 'base_executable': real,"
    " 'include': sysconfig.get_paths().get('include') or '',"
    " 'abiflags': getattr(sys, 'abiflags', ''),"
    " 'gil_disabled': bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}))\n"
)


@dataclass(frozen=True)
class PythonInfo:
    """A bridged interpreter: exact version, the real executable, ``X.Y``."""

    version: str
    executable: Path
    minor: str

    @property
    def cp_tag(self) -> str:
        """``cp312`` for 3.12: the ABI tag conda-forge uses in ``python_abi``."""
        return "cp" + self.minor.replace(".", "")

    @property
    def version_tuple(self) -> tuple[int, ...]:
        m = _VERSION_RE.match(self.version)
        return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


@dataclass(frozen=True)
class Probe:
    """What one run of a candidate interpreter reported (or why it failed)."""

    candidate: str
    stat_key: str
    impl: str = ""
    version: str = ""
    major: int = 0
    minor: int = 0
    base_executable: str = ""
    include: str = ""
    abiflags: str = ""
    gil_disabled: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Probe:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})  # type: ignore[arg-type]

    def unusable_reason(self) -> str | None:
        """Why this interpreter cannot be bridged, or None when it can."""
        if self.error:
            return self.error
        if self.impl != "CPython":
            return f"it is {self.impl or 'not CPython'}, only CPython is supported"
        if (self.major, self.minor) < MIN_MINOR:
            return (
                f"it is Python {self.version}; CPython >= {MIN_MINOR[0]}.{MIN_MINOR[1]} is required"
            )
        if self.gil_disabled or self.abiflags not in ("", "m"):
            return f"it has ABI flags {self.abiflags!r}; only the default CPython ABI is supported"
        if not self.base_executable or not os.path.isfile(self.base_executable):
            return "its base executable could not be located"
        return None

    def info(self) -> PythonInfo:
        return PythonInfo(
            version=self.version,
            executable=Path(self.base_executable),
            minor=f"{self.major}.{self.minor}",
        )


def stat_key(path: str) -> str | None:
    """Identity of an interpreter file for the probe cache (None if missing)."""
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except OSError:
        return None
    return f"{real}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def probe(candidate: str, *, timeout: float = 30.0) -> Probe:
    """Run ``candidate`` once and record its version and base interpreter."""
    key = stat_key(candidate) or ""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = None
    # "-I" does not exist on Python 2: retry without it before giving up.
    for flags in (["-I", "-S"], ["-S"]):
        try:
            proc = subprocess.run(
                [candidate, *flags, "-c", _PROBE],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return Probe(candidate, key, error=f"it could not be run ({exc})")
        if proc.returncode == 0:
            break
    assert proc is not None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return Probe(candidate, key, error=f"it exited with {proc.returncode}: {tail[0]}")
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Probe(candidate, key, error="it printed something that is not a version report")
    return Probe.from_json({**data, "candidate": candidate, "stat_key": key})


def _pyenv_root() -> Path:
    env = os.environ.get("PYENV_ROOT")
    return Path(env) if env else Path.home() / ".pyenv"


def _minor_of_name(name: str) -> int | None:
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


def _wanted(path: Path) -> bool:
    minor = _minor_of_name(path.name)
    return minor is not None and (3, minor) >= MIN_MINOR and os.access(path, os.X_OK)


def discover_candidates(path_env: str | None = None) -> list[str]:
    """Interpreter paths worth probing: pyenv versions, then ``python3.X`` on PATH.

    Only globbing and ``stat``: nothing is run here. Names already tell the
    minor version, so interpreters older than 3.8 are not even probed.
    """
    found: list[str] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        real = os.path.realpath(path)
        if real not in seen and _wanted(path):
            seen.add(real)
            found.append(str(path))

    root = _pyenv_root()
    versions = root / "versions"
    if versions.is_dir():
        for exe in sorted(versions.glob("*/bin/python3.*")):
            add(exe)
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    shim_dirs = {os.path.realpath(root / "shims")}
    for entry in path_env.split(os.pathsep):
        if (
            not entry
            or os.path.realpath(entry) in shim_dirs
            or entry.rstrip("/").endswith("/shims")
        ):
            continue
        d = Path(entry)
        if not d.is_dir():
            continue
        try:
            names = sorted(p for p in d.iterdir() if _minor_of_name(p.name) is not None)
        except OSError:
            continue
        for exe in names:
            add(exe)
    return found


def probe_all(
    candidates: Iterable[str],
    cache: Mapping[str, Probe],
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Probe]:
    """Probe every candidate whose cached probe is missing or stale.

    Returns the probes by candidate path (cached ones included). Runs the
    interpreters in a small thread pool: each probe is ~30 ms of process start.
    """
    result: dict[str, Probe] = {}
    todo: list[str] = []
    for cand in candidates:
        key = stat_key(cand)
        cached = cache.get(cand)
        if key is None:
            result[cand] = Probe(cand, "", error="it does not exist")
        elif cached is not None and cached.stat_key == key:
            result[cand] = cached
        else:
            todo.append(cand)
    if todo:
        if progress:
            progress(f"probing {len(todo)} interpreter(s)")
        with ThreadPoolExecutor(max_workers=4) as pool:
            for cand, pr in zip(todo, pool.map(probe, todo), strict=True):
                result[cand] = pr
    return result


def select_pythons(
    explicit: Sequence[str],
    discovered: Sequence[str],
    probes: Mapping[str, Probe],
) -> tuple[PythonInfo, ...]:
    """One interpreter per minor: explicit first, then the highest patch.

    An explicit interpreter that cannot be bridged is an error (the user asked
    for it); a discovered one is silently skipped.
    """
    chosen: dict[str, PythonInfo] = {}
    for cand in explicit:
        pr = probes[cand]
        reason = pr.unusable_reason()
        if reason:
            raise ChannelError(
                f"cannot use {cand} as a channel python: {reason}",
                hint="pass the path of a CPython >= 3.8 interpreter (for example "
                "~/.pyenv/versions/3.12.1/bin/python3.12)",
            )
        info = pr.info()
        chosen.setdefault(info.minor, info)
    best: dict[str, PythonInfo] = {}
    for cand in discovered:
        pr = probes.get(cand)
        if pr is None or pr.unusable_reason():
            continue
        info = pr.info()
        if info.minor in chosen:
            continue
        current = best.get(info.minor)
        if current is None or info.version_tuple > current.version_tuple:
            best[info.minor] = info
    chosen.update(best)
    return tuple(sorted(chosen.values(), key=lambda p: p.version_tuple))


def discover_pythons(
    pythons: Sequence[Path | str] = (),
    *,
    discover: bool = True,
    cache: Mapping[str, Probe] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[PythonInfo, ...]:
    """The interpreters the channel bridges, one per minor version, oldest first."""
    explicit = [os.path.abspath(Path(p).expanduser()) for p in pythons]
    discovered = discover_candidates() if discover else []
    probes = probe_all([*explicit, *discovered], cache or {}, progress=progress)
    return select_pythons(explicit, discovered, probes)
