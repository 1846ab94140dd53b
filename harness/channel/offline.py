"""Build (or confirm up to date) the offline conda channel.

Cheap when nothing changed: every input -- the selected interpreters (path
and exact version), the explicit wheels' sha256, the requirement list and the
builder's format version -- goes into one hash kept in
``root/.harness-channel.json``. When it matches and the channel's files are
there, :func:`build_offline_channel` returns without taking a lock, running
pip, spawning an interpreter (probes are cached by ``stat``) or importing
rattler.

Safe when it did change: the channel is built in a temporary sibling
directory and swapped in atomically (:mod:`harness.channel.atomic`), under a
file lock at ``root.parent / (root.name + ".lock")``; a second process
waiting on the lock finds the channel up to date and returns. Archives whose
inputs did not change are hard-linked from the previous channel instead of
being converted again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.channel.atomic import link_or_copy, publish_dir, write_json
from harness.channel.conda_pkg import PackageSpec, write_package
from harness.channel.cuda import CUDA_VERSIONS, cuda_packages
from harness.channel.python_pkg import python_abi_package, python_package
from harness.channel.pythons import (
    Probe,
    PythonInfo,
    discover_candidates,
    probe_all,
    select_pythons,
)
from harness.channel.wheelhouse import (
    DEFAULT_REQUIREMENTS,
    default_wheelhouse,
    ensure_wheels,
    parse_requirements,
)
from harness.channel.wheels import (
    CONVERTER_VERSION,
    WheelMeta,
    conversion_key,
    is_pure_tag,
    read_wheel,
    wheel_file_name,
    wheel_package_spec,
)
from harness.errors import ChannelError

#: Bump whenever the channel's layout or any package's content changes.
FORMAT_VERSION = 1
STAMP_NAME = ".harness-channel.json"
#: Seconds to wait for another process building the same channel.
LOCK_TIMEOUT = 1800.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class OfflineChannel:
    """A built offline channel: where it is and what it holds."""

    path: Path
    url: str
    pythons: tuple[PythonInfo, ...]
    packages: tuple[str, ...]
    input_hash: str
    rebuilt: bool
    subdir: str = "linux-64"

    @property
    def minors(self) -> tuple[str, ...]:
        return tuple(p.minor for p in self.pythons)


def host_subdir() -> str:
    """The conda subdir of this machine (the ``python`` packages are built for it)."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
            machine, machine
        )
        return f"linux-{arch}"
    if sys.platform == "darwin":
        return "osx-arm64" if machine == "arm64" else "osx-64"
    raise ChannelError(
        f"the offline channel cannot bridge interpreters on {sys.platform}",
        hint="use a real conda channel (conda-forge) on this platform",
    )


@dataclass(frozen=True)
class _Inputs:
    """Everything the channel is made from, and the caches used to find it."""

    pythons: tuple[PythonInfo, ...]
    wheels: tuple[tuple[Path, str], ...]  # explicit (path, sha256)
    requirements: tuple[str, ...]
    subdir: str
    probes: Mapping[str, Probe]
    wheel_hashes: Mapping[str, Mapping[str, str]]
    caches_changed: bool  # an interpreter was run or a wheel hashed
    hash: str


def _read_stamp(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _wheel_hashes(
    wheels: Sequence[Path], cache: Mapping[str, Mapping[str, str]]
) -> tuple[list[tuple[Path, str]], dict[str, dict[str, str]]]:
    out: list[tuple[Path, str]] = []
    new_cache: dict[str, dict[str, str]] = {}
    for raw in wheels:
        path = Path(raw).expanduser().absolute()
        if not path.is_file():
            raise ChannelError(f"wheel not found: {path}", file=path, hint="check the --wheel path")
        if not is_pure_tag(path.name):
            # Cheap, name-only check first, so the refusal costs nothing.
            read_wheel(path)  # raises the detailed ChannelError
        st = path.stat()
        ident = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        cached = cache.get(str(path))
        if cached and cached.get("stat") == ident and cached.get("sha256"):
            sha = cached["sha256"]
        else:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
        new_cache[str(path)] = {"stat": ident, "sha256": sha}
        out.append((path, sha))
    return out, new_cache


def _gather_inputs(
    stamp: Mapping[str, Any],
    *,
    pythons: Sequence[Path | str],
    wheels: Sequence[Path],
    requirements: Sequence[str],
    discover: bool,
    progress: Progress,
) -> _Inputs:
    subdir = host_subdir()
    cache = {
        k: Probe.from_json(v) for k, v in (stamp.get("probes") or {}).items() if isinstance(v, dict)
    }
    explicit = [os.path.abspath(Path(p).expanduser()) for p in pythons]
    discovered = discover_candidates() if discover else []
    probes = probe_all([*explicit, *discovered], cache, progress=progress)
    probed = any(cache.get(k) != v for k, v in probes.items())
    selected = select_pythons(explicit, discovered, probes)
    if not selected:
        raise ChannelError(
            "no usable CPython >= 3.8 interpreter found for the offline channel",
            hint="install one with pyenv, put python3.X on PATH, or pass --python PATH",
        )
    wheel_list, wheel_cache = _wheel_hashes(wheels, stamp.get("wheel_hashes") or {})
    # Parsed (and so validated) before anything is built; canonical for the hash.
    reqs = tuple(sorted({str(r) for r in parse_requirements(requirements)}))
    material = {
        "format": FORMAT_VERSION,
        "converter": CONVERTER_VERSION,
        "subdir": subdir,
        "cuda": list(CUDA_VERSIONS),
        "pythons": [[p.minor, p.version, str(p.executable)] for p in selected],
        "wheels": sorted([p.name, sha] for p, sha in wheel_list),
        "requirements": list(reqs),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return _Inputs(
        pythons=selected,
        wheels=tuple(wheel_list),
        requirements=reqs,
        subdir=subdir,
        probes=probes,
        wheel_hashes=wheel_cache,
        caches_changed=probed or wheel_cache != (stamp.get("wheel_hashes") or {}),
        hash=digest,
    )


def _is_current(root: Path, stamp: Mapping[str, Any], inputs: _Inputs) -> bool:
    if stamp.get("input_hash") != inputs.hash or stamp.get("format") != FORMAT_VERSION:
        return False
    if not (root / "noarch" / "repodata.json").is_file():
        return False
    if not (root / inputs.subdir / "repodata.json").is_file():
        return False
    return all((root / entry["file"]).is_file() for entry in stamp.get("packages") or [])


def _channel(root: Path, stamp: Mapping[str, Any], *, rebuilt: bool) -> OfflineChannel:
    pys = tuple(
        PythonInfo(version=p["version"], executable=Path(p["executable"]), minor=p["minor"])
        for p in stamp.get("pythons") or []
    )
    files = tuple(sorted(Path(e["file"]).name for e in stamp.get("packages") or []))
    return OfflineChannel(
        path=root,
        url=root.as_uri(),
        pythons=pys,
        packages=files,
        input_hash=str(stamp.get("input_hash", "")),
        rebuilt=rebuilt,
        subdir=str(stamp.get("subdir", "linux-64")),
    )


def _stamp(
    inputs: _Inputs, packages: Sequence[tuple[str, str]], wheel_names: Sequence[str]
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "input_hash": inputs.hash,
        "subdir": inputs.subdir,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pythons": [
            {"version": p.version, "executable": str(p.executable), "minor": p.minor}
            for p in inputs.pythons
        ],
        "requirements": list(inputs.requirements),
        "wheels": sorted(wheel_names),
        "packages": [{"file": f, "key": k} for f, k in sorted(packages)],
        # Caches that let the next up-to-date check avoid running anything.
        "probes": {k: v.to_json() for k, v in sorted(inputs.probes.items())},
        "wheel_hashes": dict(inputs.wheel_hashes),
    }


@dataclass(frozen=True)
class _Planned:
    """One archive of the channel: where it goes, its reuse key, how to make it."""

    subdir: str
    file_name: str
    key: str
    make: Callable[[], PackageSpec]

    @property
    def rel(self) -> str:
        return f"{self.subdir}/{self.file_name}"


def _const(spec: PackageSpec) -> _Planned:
    return _Planned(spec.subdir, spec.file_name, spec.key, lambda: spec)


def _plan(
    inputs: _Inputs, wheelhouse: Path, progress: Progress
) -> tuple[list[_Planned], list[str]]:
    plans: list[_Planned] = []
    for py in inputs.pythons:
        plans.append(_const(python_package(py, inputs.subdir)))
        plans.append(_const(python_abi_package(py, inputs.subdir)))
    plans.extend(_const(spec) for spec in cuda_packages())

    chosen: dict[str, tuple[WheelMeta, int]] = {}  # by sha256
    for path, _sha in inputs.wheels:
        meta = read_wheel(path)
        chosen[meta.sha256] = (meta, 1)  # explicit wheels win ties in the solver
    resolutions = ensure_wheels(inputs.requirements, inputs.pythons, wheelhouse, progress=progress)
    for res in resolutions.values():
        for meta in res.wheels:
            chosen.setdefault(meta.sha256, (meta, 0))
    pythons = inputs.pythons
    for meta, build_number in chosen.values():
        plans.append(
            _Planned(
                "noarch",
                wheel_file_name(meta, build_number),
                conversion_key(meta, pythons, build_number),
                lambda meta=meta, bn=build_number: wheel_package_spec(
                    meta, pythons, build_number=bn
                ),
            )
        )
    seen: dict[str, _Planned] = {}
    for p in plans:
        if p.rel in seen:
            raise ChannelError(f"two inputs produce the same package file {p.rel}")
        seen[p.rel] = p
    return plans, sorted(m.path.name for m, _ in chosen.values())


def _run_index(path: Path) -> None:
    """``rattler.index.index_fs(path, force=True)``, also from inside a running loop."""
    from rattler.index import index_fs  # heavy import: only when (re)building

    def run() -> None:
        asyncio.run(index_fs(path, force=True))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        run()
    else:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(run).result()
    # Notes gotcha 1: rattler's background threads can crash a process that
    # exits right after index_fs; a short pause lets them wind down.
    time.sleep(0.1)


def _clean_leftovers(root: Path) -> None:
    """Remove temporary/old siblings of killed builds (we hold the lock)."""
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*"):
        for stale in root.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _build(
    root: Path, inputs: _Inputs, old_stamp: Mapping[str, Any], wheelhouse: Path, progress: Progress
) -> OfflineChannel:
    _clean_leftovers(root)
    plans, wheel_names = _plan(inputs, wheelhouse, progress)
    old_keys = {e.get("file"): e.get("key") for e in old_stamp.get("packages") or []}
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        work.chmod(0o755)  # mkdtemp makes it 0700; a channel is meant to be shared
        for sub in ("noarch", inputs.subdir):
            (work / sub).mkdir(parents=True, exist_ok=True)
        reused = [p for p in plans if old_keys.get(p.rel) == p.key and (root / p.rel).is_file()]
        for p in reused:
            link_or_copy(root / p.rel, work / p.rel)
        todo = [p for p in plans if p not in reused]
        progress(f"writing {len(todo)} package(s) ({len(reused)} reused from the previous channel)")

        def write(p: _Planned) -> None:
            spec = p.make()
            out = write_package(spec, work / p.subdir)
            if out.name != p.file_name:  # pragma: no cover - guards a planning bug
                raise ChannelError(f"internal error: planned {p.file_name}, wrote {out.name}")

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(write, todo))
        progress("indexing")
        try:
            _run_index(work)
        except Exception as exc:  # rattler raises its own exception types
            raise ChannelError(
                f"indexing the offline channel failed: {exc}",
                hint="rerun with force=True (--force); if it persists, delete "
                f"{root} and build again",
            ) from None
        stamp = _stamp(inputs, [(p.rel, p.key) for p in plans], wheel_names)
        write_json(work / STAMP_NAME, stamp)  # last: marks the channel complete
        publish_dir(work, root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    progress(f"offline channel ready: {root} ({len(plans)} packages)")
    return _channel(root, stamp, rebuilt=True)


def _refuse_foreign_dir(root: Path) -> None:
    """Never replace a directory that is not one of our channels (it would be deleted)."""
    if root.is_symlink() or not root.exists():
        return
    if not root.is_dir():
        raise ChannelError(f"{root} exists and is not a directory", hint="choose another --root")
    if (root / STAMP_NAME).is_file() or not any(root.iterdir()):
        return
    raise ChannelError(
        f"{root} exists and is not an offline channel (no {STAMP_NAME}); refusing to replace it",
        hint="choose a new or empty directory for --root, or delete this one yourself",
    )


def _refresh_caches(root: Path, inputs: _Inputs) -> None:
    """Store new probe results in an up-to-date stamp so the next check runs nothing.

    Only a cache: skipped when another process holds the lock, and done only
    after re-reading the stamp under the lock (a concurrent rebuild must never
    get its stamp overwritten by an older one).
    """
    lock = FileLock(str(root.parent / (root.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return
    try:
        stamp = _read_stamp(root)
        if stamp.get("input_hash") != inputs.hash:
            return
        new = {
            **stamp,
            "probes": {k: v.to_json() for k, v in sorted(inputs.probes.items())},
            "wheel_hashes": dict(inputs.wheel_hashes),
        }
        write_json(root / STAMP_NAME, new)
    except OSError:
        pass
    finally:
        lock.release()


def build_offline_channel(
    root: Path,
    *,
    pythons: Sequence[Path] = (),
    wheels: Sequence[Path] = (),
    requirements: Sequence[str] = DEFAULT_REQUIREMENTS,
    discover: bool = True,
    wheelhouse: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> OfflineChannel:
    """Build the offline channel at ``root``, or confirm that it is up to date.

    ``pythons`` are interpreters to bridge in addition to (and preferred over)
    the discovered ones (``discover=False``: only these). ``wheels`` are extra
    pure wheels to convert; ``requirements`` are resolved per python and
    fetched into ``wheelhouse`` when it does not satisfy them already.
    ``force`` rebuilds even when the stamp matches. Raises ChannelError.
    """
    say: Progress = progress or (lambda _msg: None)
    root = Path(root).expanduser().absolute()
    house = Path(wheelhouse).expanduser().absolute() if wheelhouse else default_wheelhouse()
    stamp = _read_stamp(root)
    inputs = _gather_inputs(
        stamp,
        pythons=pythons,
        wheels=wheels,
        requirements=requirements,
        discover=discover,
        progress=say,
    )
    if not force and _is_current(root, stamp, inputs):
        if inputs.caches_changed:
            _refresh_caches(root, inputs)
        return _channel(root, stamp, rebuilt=False)

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChannelError(
            f"cannot create {root.parent}: {exc}", hint="choose another --root"
        ) from None
    lock = FileLock(str(root.parent / (root.name + ".lock")))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another process building {root}")
            lock.acquire(timeout=LOCK_TIMEOUT)
    except Timeout:
        raise ChannelError(
            f"timed out after {LOCK_TIMEOUT:.0f} s waiting for the lock on {root}",
            hint=f"another build may be stuck; if no harness process runs, delete {lock.lock_file}",
        ) from None
    try:
        stamp = _read_stamp(root)
        if not force and _is_current(root, stamp, inputs):
            return _channel(root, stamp, rebuilt=False)
        _refuse_foreign_dir(root)
        say(f"building offline channel in {root}")
        try:
            return _build(root, inputs, stamp, house, say)
        except OSError as exc:
            raise ChannelError(
                f"could not write the offline channel at {root}: {exc}",
                hint="check free space and permissions, or choose another --root",
            ) from None
    finally:
        lock.release()
