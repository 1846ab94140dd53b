"""Installing a role's prefix from its locked records, so that a killed run is never trusted.

Prefixes are installed **in place** (``envs/<cell>/<role>``), not aside and
renamed: conda packages and entry points embed the absolute prefix path
(shebangs, prefix placeholders), so a prefix installed at ``x.tmp`` and renamed
to ``x`` would point at a directory that no longer exists.  Atomicity
(DESIGN invariant 4) comes from two markers in ``conda-meta/``:

1. ``harness-incomplete`` is written *before* rattler touches the prefix;
2. ``harness-installed`` (the records hash) is written *after* it is done,
   and only then is the incomplete marker removed.

A prefix with the incomplete marker, or with files but no installed marker,
is wiped and installed again.  A prefix whose installed marker matches the
lock is not touched at all (invariant 2): no rattler call.  Callers hold the
cell lock (invariant 5).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rattler import RepoDataRecord, install

from harness.activation import CACHE_NAME as ACTIVATION_CACHE
from harness.cache import atomic_write_json, fsync_dir, read_json
from harness.errors import InstallError
from harness.pypi import MARKER as PYPI_MARKER
from harness.solve import run_sync

# Markers have no ``.json`` suffix (as pixi's ``conda-meta/pixi``): rattler parses every
# ``conda-meta/*.json`` as a package record and refuses the prefix otherwise.
INSTALLED_MARKER = "harness-installed"
INCOMPLETE_MARKER = "harness-incomplete"
# Files of later stages that depend on the conda install; removed when it is redone.
DEPENDENT_MARKERS = (PYPI_MARKER, ACTIVATION_CACHE)
# Test hook (fault injection): after rattler has linked the prefix but before it is
# marked complete, create this file and wait until it is deleted (or the process killed).
PAUSE_ENV = "HARNESS_FAULT_PAUSE_INSTALL"

MISSING = "missing"
INCOMPLETE = "incomplete"
UNMARKED = "unmarked"
DAMAGED = "damaged"
STALE = "stale"
CURRENT = "current"


@dataclass(frozen=True)
class PrefixState:
    """Where a prefix stands relative to the records it should hold, and why."""

    path: Path
    status: str  # missing | incomplete | unmarked | damaged | stale | current
    reason: str
    installed_hash: str | None = None

    @property
    def current(self) -> bool:
        return self.status == CURRENT


def meta_dir(prefix: Path) -> Path:
    return Path(prefix) / "conda-meta"


def installed_hash(prefix: Path) -> str | None:
    """The records hash the prefix was completely installed from, if it was."""
    if (meta_dir(prefix) / INCOMPLETE_MARKER).exists():
        return None
    marker = read_json(meta_dir(prefix) / INSTALLED_MARKER)
    return marker.get("records_hash") if isinstance(marker, dict) else None


def _record_meta_name(record: RepoDataRecord) -> str:
    return f"{record.name.normalized}-{record.version}-{record.build}.json"


def prefix_state(prefix: Path, records_hash: str, records: Sequence[RepoDataRecord]) -> PrefixState:
    """Classify ``prefix`` without changing it (plan and install both start here)."""
    prefix = Path(prefix)
    meta = meta_dir(prefix)
    if not prefix.exists():
        return PrefixState(prefix, MISSING, "prefix missing")
    if (meta / INCOMPLETE_MARKER).exists():
        return PrefixState(prefix, INCOMPLETE, "prefix incomplete (interrupted run)")
    marker = read_json(meta / INSTALLED_MARKER)
    if not isinstance(marker, dict) or not marker.get("records_hash"):
        return PrefixState(prefix, UNMARKED, "prefix not marked complete (interrupted or foreign)")
    have = str(marker["records_hash"])
    if have != records_hash:
        return PrefixState(prefix, STALE, "lock changed", have)
    for record in records:
        if not (meta / _record_meta_name(record)).exists():
            return PrefixState(
                prefix,
                DAMAGED,
                f"prefix damaged: conda-meta/{_record_meta_name(record)} missing",
                have,
            )
    return PrefixState(prefix, CURRENT, "prefix matches lock", have)


def archive_path(record: RepoDataRecord) -> Path | None:
    """The local file behind a ``file://`` record, ``None`` for remote packages."""
    parsed = urlparse(record.url)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.netloc + parsed.path))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_archives(records: Sequence[RepoDataRecord], *, context: str = "") -> None:
    """Check every local archive against its locked sha256.

    rattler does not do this for ``file://`` URLs: a rebuilt archive under the
    same file name would be installed silently against a stale lock.
    """
    where = f" ({context})" if context else ""
    for record in records:
        path = archive_path(record)
        if path is None:
            continue
        name = f"{record.name.normalized} {record.version} {record.build}"
        if not path.is_file():
            raise InstallError(
                f"package {name}{where}: archive {path} is missing",
                hint="the local channel changed since the lock was made; re-solve it (update)",
            )
        expected = record.sha256.hex() if record.sha256 else None
        if expected is None:
            raise InstallError(
                f"package {name}{where}: the lock has no sha256 for {path}, so it cannot be verified",
                hint="re-index the channel and re-solve it (update)",
            )
        actual = _sha256_file(path)
        if actual != expected:
            raise InstallError(
                f"package {name}{where}: archive {path} does not match the lock\n"
                f"  expected sha256: {expected}\n"
                f"  actual sha256:   {actual}",
                hint="the archive was rebuilt or modified after the lock was made; re-index the "
                "channel (rattler's index_fs(..., force=True)) and re-solve it (update)",
            )


def _wipe(prefix: Path) -> None:
    if prefix.is_symlink() or prefix.is_file():
        prefix.unlink()
    elif prefix.exists():
        shutil.rmtree(prefix)


def _pause_for_fault_injection() -> None:
    signal_file = os.environ.get(PAUSE_ENV)
    if not signal_file:
        return
    path = Path(signal_file)
    path.write_text(str(os.getpid()))
    while path.exists():  # the test that asked for this kills us or deletes the file
        time.sleep(0.02)


def install_prefix(
    prefix: Path,
    records: Sequence[RepoDataRecord],
    records_hash: str,
    *,
    pkgs_dir: Path | None = None,
    context: str = "",
) -> PrefixState:
    """Make ``prefix`` hold exactly ``records``; returns the state found *before* (``current`` = no work).

    A stale but complete prefix is updated in place (rattler computes the
    transaction); anything untrustworthy is wiped first.
    """
    prefix = Path(prefix)
    state = prefix_state(prefix, records_hash, records)
    if state.current:
        return state
    if not records:  # install([]) would empty the prefix: never the intent
        raise InstallError(f"{context or prefix}: nothing to install (the lock has no packages)")
    verify_archives(records, context=context)
    if state.status in (INCOMPLETE, UNMARKED, DAMAGED):
        _wipe(prefix)
    meta = meta_dir(prefix)
    meta.mkdir(parents=True, exist_ok=True)
    for name in (INSTALLED_MARKER, *DEPENDENT_MARKERS):
        with contextlib.suppress(FileNotFoundError):
            (meta / name).unlink()
    atomic_write_json(
        meta / INCOMPLETE_MARKER,
        {"pid": os.getpid(), "records_hash": records_hash, "started": time.time()},
    )
    try:
        run_sync(
            install(
                list(records),
                target_prefix=prefix,
                cache_dir=pkgs_dir,
                show_progress=False,
            )
        )
    except Exception as exc:
        raise InstallError(
            f"{context or prefix}: installing {len(records)} packages into {prefix} failed: "
            f"{type(exc).__name__}: {exc}",
            hint="the prefix is left marked incomplete and will be redone on the next run",
        ) from None
    _pause_for_fault_injection()
    atomic_write_json(
        meta / INSTALLED_MARKER,
        {"records_hash": records_hash, "packages": len(records), "finished": time.time()},
    )
    (meta / INCOMPLETE_MARKER).unlink()
    fsync_dir(meta)
    return state


def verify_prefix(prefix: Path, records: Sequence[RepoDataRecord]) -> list[str]:
    """Problems that make ``prefix`` not a complete install of ``records`` (empty = complete).

    Checks every file that conda-meta lists; tests and ``harness doctor`` use it.
    """
    problems: list[str] = []
    meta = meta_dir(prefix)
    if (meta / INCOMPLETE_MARKER).exists():
        problems.append("incomplete marker present")
    if not (meta / INSTALLED_MARKER).exists():
        problems.append("installed marker missing")
    for record in records:
        path = meta / _record_meta_name(record)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            problems.append(f"{path.name} missing or unreadable")
            continue
        for rel in data.get("files", []):
            target = Path(prefix) / rel
            if not (target.exists() or target.is_symlink()):
                problems.append(f"{record.name.normalized}: {rel} missing")
    return problems
