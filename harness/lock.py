"""One lock file per cell (pixi.lock format) and the input hash that says when it is stale.

``solve/<cell>/pixi.lock`` holds one environment per role (``build``, ``host``,
``test``), for the cell's platform with its declared virtual packages
recorded.  Beside it, ``inputs.json`` records, per role, the *material* of the
solve (channel URLs, a fingerprint of each local channel's repodata, specs,
virtual packages, platform, strategy), its hash, and the sha256 of the lock
file it describes.  A role is re-solved only when its hash changes (DESIGN
invariant 2) or on ``update``.

A lock is trusted only when it matches its sidecar byte for byte and parses:
a truncated, corrupt or hand-edited lock is re-solved with a warning.  The
lock is written first and the sidecar last, both atomically, so a run killed
in between leaves a lock that no longer matches its sidecar (invariant 4).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rattler import LockChannel, LockFile, LockPlatform, RepoDataRecord

from harness import faults
from harness.cache import Cache, atomic_write_json, fsync_dir, read_json
from harness.cell import Cell, digest
from harness.channels import ResolvedChannel, repodata_fingerprint
from harness.solve import RoleRequest

LOCK_NAME = "pixi.lock"
SIDECAR_NAME = "inputs.json"
FORMAT = 1

# Material keys as a user would call them, for "inputs changed: ..." messages.
_FIELD_WORDS = {
    "channels": "channels",
    "repodata": "channel contents",
    "specs": "specs",
    "virtual_packages": "virtual packages",
    "platform": "platform",
    "subdirs": "platform",
    "strategy": "solve strategy",
    "channel_priority": "channel priority",
    "exclude_newer": "exclude-newer",
    "format": "harness version",
}


class StaleLockWarning(UserWarning):
    """A lock file that could not be trusted and is being re-solved."""


def role_material(
    cell: Cell, request: RoleRequest, channels: Sequence[ResolvedChannel]
) -> dict[str, Any]:
    """Everything a role's solve depends on: change any of it and the role is re-solved."""
    subdirs = [cell.platform, "noarch"]
    return {
        "format": FORMAT,
        "platform": cell.platform,
        "subdirs": subdirs,
        "channels": [c.url for c in channels],
        "repodata": [repodata_fingerprint(c, subdirs) for c in channels],
        "specs": sorted(request.specs),
        "virtual_packages": sorted(cell.virtual_packages),
        "strategy": cell.solve_strategy or "highest",
        "channel_priority": cell.channel_priority,
        "exclude_newer": cell.exclude_newer,
    }


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """The user-facing names of the material fields that differ (for plan and report reasons)."""
    if not isinstance(old, Mapping):
        return ["unknown"]
    words: list[str] = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            word = _FIELD_WORDS.get(key, key)
            if word not in words:
                words.append(word)
    return words


def record_identity(record: RepoDataRecord) -> dict[str, Any]:
    """What identifies an installed package (invariant 1 hashes build/host packages by this)."""
    return {
        "name": record.name.normalized,
        "version": str(record.version),
        "build": str(record.build),
        "subdir": str(record.subdir),
        "sha256": record.sha256.hex() if record.sha256 else None,
        "url": record.url,
    }


def records_digest(records: Sequence[RepoDataRecord]) -> str:
    """The hash of a role's locked packages: the input hash of its prefix."""
    return digest(
        sorted((record_identity(r) for r in records), key=lambda d: (d["name"], d["url"]))
    )


@dataclass(frozen=True)
class LockedRole:
    """One role as recorded on disk: its records and the material they were solved from."""

    role: str
    records: tuple[RepoDataRecord, ...]
    material: Mapping[str, Any]

    @property
    def records_hash(self) -> str:
        return records_digest(self.records)


@dataclass(frozen=True)
class LockState:
    """What the lock directory of a cell holds.

    ``roles`` has only trusted roles; ``problem`` says why the whole lock was
    rejected (corrupt, truncated, mismatched sidecar), ``None`` when it was not.
    """

    lock_path: Path
    roles: Mapping[str, LockedRole] = field(default_factory=dict)
    problem: str | None = None
    exists: bool = False


def lock_path(cache: Cache, cell_id: str) -> Path:
    return cache.solve_dir(cell_id) / LOCK_NAME


def sidecar_path(cache: Cache, cell_id: str) -> Path:
    return cache.solve_dir(cell_id) / SIDECAR_NAME


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_lock(cache: Cache, cell: Cell) -> LockState:
    """Read and validate the cell's lock; never raises for bad content (that means re-solve)."""
    path = lock_path(cache, cell.id)
    sidecar = read_json(sidecar_path(cache, cell.id))
    if not path.exists():
        return LockState(lock_path=path)
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        return LockState(
            lock_path=path,
            exists=True,
            problem="its inputs record is missing or unreadable (interrupted run?)",
        )
    if sidecar.get("lock_sha256") != _sha256(path):
        return LockState(
            lock_path=path,
            exists=True,
            problem="it does not match its inputs record (corrupt, truncated or edited)",
        )
    try:
        lock = LockFile.from_path(path)
    except BaseException as exc:  # rattler raises PanicException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return LockState(lock_path=path, exists=True, problem=f"it cannot be read: {exc}")
    roles: dict[str, LockedRole] = {}
    for role, entry in dict(sidecar.get("roles") or {}).items():
        try:
            env = lock.environment(role)
            records = (env.conda_repodata_records() if env is not None else {}).get(cell.platform)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return LockState(lock_path=path, exists=True, problem=f"environment {role!r}: {exc}")
        if not records:
            return LockState(
                lock_path=path,
                exists=True,
                problem=f"it has no {cell.platform} packages for environment {role!r}",
            )
        roles[role] = LockedRole(
            role=role, records=tuple(records), material=entry.get("material", {})
        )
    return LockState(lock_path=path, roles=roles, exists=True)


def warn_untrusted(cell: Cell, state: LockState) -> None:
    """Tell the user a lock is being re-solved instead of trusted (it may hide a disk problem)."""
    warnings.warn(
        f"cell {cell.id!r}: lock file {state.lock_path} cannot be trusted ({state.problem}); "
        "re-solving",
        StaleLockWarning,
        stacklevel=3,
    )


def write_lock(
    cache: Cache,
    cell: Cell,
    channels: Sequence[ResolvedChannel],
    roles: Mapping[str, LockedRole],
) -> Path:
    """Write the lock (all roles) and then its sidecar, each atomically."""
    path = lock_path(cache, cell.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = LockFile([LockPlatform(cell.platform, virtual_packages=list(cell.virtual_packages))])
    for role, locked in roles.items():
        lock.set_channels(role, [LockChannel(c.url) for c in channels])
        for record in locked.records:
            lock.add_conda_package(role, LockPlatform(cell.platform), record)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        faults.point("lock.writing")
        lock.to_path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        faults.point("lock.tmp-written")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)
    faults.point("lock.replaced")
    atomic_write_json(
        sidecar_path(cache, cell.id),
        {
            "format": FORMAT,
            "cell": cell.id,
            "lock_sha256": _sha256(path),
            "roles": {
                role: {
                    "input_hash": digest(locked.material),
                    "records_hash": locked.records_hash,
                    "material": dict(locked.material),
                }
                for role, locked in roles.items()
            },
        },
    )
    return path
