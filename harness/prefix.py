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

Files damaged *inside* a prefix marked installed (deleted, truncated) are not
seen by those markers: looking at every file costs a ``stat`` each, too much
for every warm run.  :func:`repair_prefix` (``--repair``) does look, against
conda-meta's ``paths_data``, and links the damaged packages again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rattler import PackageCache, RepoDataRecord, install
from rattler.package_cache import ValidationMode

from harness import faults
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
            size = path.stat().st_size
            locked_size = record.size if isinstance(record.size, int) else None
            sizes = ""
            if locked_size is not None and locked_size != size:
                sizes = f"\n  expected size:   {locked_size} bytes\n  actual size:     {size} bytes"
            if locked_size is not None and size < locked_size:
                hint = (
                    "the archive is truncated (an interrupted copy or build?); restore it in the "
                    "channel: copy it again, or rebuild the channel (`harness channel offline "
                    "--force` for the offline channel)"
                )
            else:
                hint = (
                    "the archive was rebuilt or modified after the lock was made; re-index the "
                    "channel (rattler's index_fs(..., force=True)) and re-solve it (update)"
                )
            raise InstallError(
                f"package {name}{where}: archive {path} does not match the lock\n"
                f"  expected sha256: {expected}\n"
                f"  actual sha256:   {actual}{sizes}",
                hint=hint,
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
    reinstall: Collection[str] = (),
    package_cache: PackageCache | None = None,
) -> PrefixState:
    """Make ``prefix`` hold exactly ``records``; returns the state found *before* (``current`` = no work).

    A stale but complete prefix is updated in place (rattler computes the
    transaction); anything untrustworthy is wiped first.  ``reinstall`` names
    packages to link again even when the prefix is current (:func:`repair_prefix`);
    ``package_cache`` replaces ``pkgs_dir`` (e.g. one that validates its entries).
    """
    prefix = Path(prefix)
    state = prefix_state(prefix, records_hash, records)
    if state.current and not reinstall:
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
    faults.point("prefix.marked-incomplete")
    try:
        run_sync(
            install(
                list(records),
                target_prefix=prefix,
                cache_dir=pkgs_dir,
                show_progress=False,
                reinstall_packages=set(reinstall) or None,
                package_cache=package_cache,
            )
        )
    except Exception as exc:
        raise InstallError(
            f"{context or prefix}: installing {len(records)} packages into {prefix} failed: "
            f"{type(exc).__name__}: {exc}",
            hint="the prefix is left marked incomplete and will be redone on the next run",
        ) from None
    _pause_for_fault_injection()
    faults.point("prefix.linked")
    atomic_write_json(
        meta / INSTALLED_MARKER,
        {"records_hash": records_hash, "packages": len(records), "finished": time.time()},
    )
    faults.point("prefix.marked-installed")
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


# -- repair -------------------------------------------------------------------------------

FILE_MISSING = "missing"
FILE_CHANGED = "changed"
RECORD_UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Damage:
    """One installed file (or package record) that is not what conda-meta says was installed."""

    package: str  # normalised name: what rattler's ``reinstall_packages`` takes
    version: str
    path: str  # relative to the prefix
    problem: str  # missing | changed | unreadable
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.package} {self.version}"


def _paths_entries(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The installed paths of one conda-meta record (``None`` when the record is malformed)."""
    paths_data = data.get("paths_data")
    if isinstance(paths_data, dict):
        entries = paths_data.get("paths")
        if isinstance(entries, list) and all(
            isinstance(e, dict) and isinstance(e.get("_path"), str) for e in entries
        ):
            return entries
        return None
    files = data.get("files", [])  # records written without paths_data: existence only
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return [{"_path": f} for f in files]
    return None


def _check_entry(prefix: Path, entry: dict[str, Any], hashes: bool) -> tuple[str, str] | None:
    """``(problem, detail)`` for one conda-meta path entry, ``None`` when the file is intact."""
    path = prefix / entry["_path"]
    kind = entry.get("path_type", "hardlink")
    try:
        st = os.lstat(path)
        if kind == "softlink":
            return None if stat.S_ISLNK(st.st_mode) else (FILE_CHANGED, "not a symbolic link")
        if kind == "directory":
            return None if stat.S_ISDIR(st.st_mode) else (FILE_CHANGED, "not a directory")
        if stat.S_ISLNK(st.st_mode):  # a file linked as a symlink: judge its target
            st = os.stat(path)
    except FileNotFoundError:
        return FILE_MISSING, ""
    except OSError as exc:
        return FILE_CHANGED, exc.strerror or type(exc).__name__
    if not stat.S_ISREG(st.st_mode):
        return FILE_CHANGED, "not a regular file"
    size = entry.get("size_in_bytes")
    if isinstance(size, int) and st.st_size != size:
        return FILE_CHANGED, f"{st.st_size} bytes, installed {size}"
    if hashes:
        # rattler records the digest after prefix replacement as ``sha256_in_prefix``
        expected = entry.get("sha256_in_prefix") or entry.get("sha256")
        if isinstance(expected, str) and _sha256_file(path) != expected:
            return FILE_CHANGED, "content differs (sha256)"
    return None


def check_files(
    prefix: Path, records: Sequence[RepoDataRecord], *, hashes: bool = False
) -> list[Damage]:
    """Every file of every package of ``prefix`` checked against its conda-meta record.

    Existence, type and size by default: a ``stat`` per file, cheap enough for
    ``--repair`` on any prefix.  ``hashes=True`` also compares each file's
    sha256, which reads the whole prefix.  Files that conda-meta does not
    list (pip installs, caches) are not looked at.

    What a ``pypi-dependencies`` install changed is not damage: uv replaces a
    conda package of the same distribution (its files go, the new ones come)
    and may overwrite files another distribution shipped.  Those files belong
    to the PyPI install now, which the pypi stage keeps; "repairing" them would
    undo it at every run.
    """
    prefix = Path(prefix)
    damage: list[Damage] = []
    listed: dict[str, set[str]] = {}  # conda package -> the distributions its dist-info names
    for record in records:
        name, version = record.name.normalized, str(record.version)
        meta_name = _record_meta_name(record)
        data = read_json(meta_dir(prefix) / meta_name)
        entries = _paths_entries(data) if isinstance(data, dict) else None
        if entries is None:
            damage.append(
                Damage(name, version, f"conda-meta/{meta_name}", RECORD_UNREADABLE,
                       "missing or not a valid package record")
            )
            continue
        listed[name] = {d for d in map(_dist_of, (e["_path"] for e in entries)) if d}
        for entry in entries:
            found = _check_entry(prefix, entry, hashes)
            if found is not None:
                damage.append(Damage(name, version, entry["_path"], *found))
    if damage and any(d.problem != RECORD_UNREADABLE for d in damage):
        files, dists = pypi_owned(prefix)
        replaced = {package for package, names in listed.items() if names & dists}
        damage = [
            d for d in damage
            if d.problem == RECORD_UNREADABLE or (d.path not in files and d.package not in replaced)
        ]
    return damage


def _dist_of(path: str) -> str | None:
    """The normalised distribution a ``.../site-packages/<name>-<version>.dist-info/RECORD`` names."""
    parts = path.split("/")
    if len(parts) < 2 or parts[-1] != "RECORD" or not parts[-2].endswith(".dist-info"):
        return None
    return _normalise_dist(parts[-2].removesuffix(".dist-info").rsplit("-", 1)[0])


def _normalise_dist(name: str) -> str:
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def pypi_owned(prefix: Path) -> tuple[set[str], set[str]]:
    """The files (relative to ``prefix``) and the distributions a PyPI install owns in ``prefix``.

    A distribution is PyPI's when its ``RECORD`` is not a file of any conda
    package (conda-meta does not list it); its files are what the ``RECORD``
    lists.
    """
    conda_files: set[str] = set()
    for meta in meta_dir(prefix).glob("*.json"):
        data = read_json(meta)
        entries = _paths_entries(data) if isinstance(data, dict) else None
        conda_files.update(e["_path"] for e in entries or ())
    files: set[str] = set()
    dists: set[str] = set()
    for record in prefix.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        rel = record.relative_to(prefix).as_posix()
        if rel in conda_files:
            continue
        name = _dist_of(rel)
        if name:
            dists.add(name)
        site = record.parent.parent
        try:
            lines = record.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            path = line.split(",", 1)[0].strip()
            if path:
                files.add(os.path.normpath(os.path.relpath(site / path, prefix)).replace(os.sep, "/"))
    return files, dists


def _listed(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", and {len(items) - limit} more" if len(items) > limit else "")


def describe_damage(damage: Sequence[Damage]) -> str:
    """``1 file missing from pytest 9.2.0 (lib/.../main.py); 2 files changed in ...`` for reports."""
    groups: dict[tuple[str, str], list[Damage]] = {}
    for item in damage:
        groups.setdefault((item.label, item.problem), []).append(item)
    parts: list[str] = []
    for (label, problem), items in groups.items():
        count = f"{len(items)} file{'s' if len(items) != 1 else ''}"
        if problem == RECORD_UNREADABLE:
            parts.append(f"the record of {label} is unreadable ({items[0].path})")
        elif problem == FILE_MISSING:
            parts.append(f"{count} missing from {label} ({_listed([d.path for d in items])})")
        else:
            changed = [f"{d.path}: {d.detail}" if d.detail else d.path for d in items]
            parts.append(f"{count} changed in {label} ({_listed(changed)})")
    return "; ".join(parts)


def _validating_cache(
    prefix: Path, records: Sequence[RepoDataRecord], pkgs_dir: Path | None
) -> PackageCache | None:
    """The package cache ``records`` were linked from, set to check its entries' sha256.

    Prefixes hard-link from the package cache, so a file truncated or edited
    in place in a prefix is damaged in the cache as well: relinking it would
    bring the damage back.  A fully validating cache re-extracts such an entry
    from its archive.  With rattler's default cache (``pkgs_dir`` ``None``)
    the directory is read from conda-meta's ``extracted_package_dir``.
    """
    dirs: list[Path] = [Path(pkgs_dir)] if pkgs_dir is not None else []
    if not dirs:
        for record in records:
            data = read_json(meta_dir(prefix) / _record_meta_name(record))
            extracted = data.get("extracted_package_dir") if isinstance(data, dict) else None
            if isinstance(extracted, str) and extracted:
                parent = Path(extracted).parent
                if parent not in dirs:
                    dirs.append(parent)
    if not dirs:
        return None
    return PackageCache.new_layered(dirs, validation_mode=ValidationMode.full())


def repair_prefix(
    prefix: Path,
    records: Sequence[RepoDataRecord],
    records_hash: str,
    *,
    pkgs_dir: Path | None = None,
    context: str = "",
    hashes: bool = False,
) -> tuple[Damage, ...]:
    """Check every file of an installed ``prefix`` and reinstall the packages that are damaged.

    Returns the damage found (empty: nothing was touched).  Call it after
    :func:`install_prefix`, on a prefix marked installed.  Damaged packages
    are linked again from a package cache that re-extracts corrupt entries
    (only theirs are validated, so the cost follows the damage); a package
    whose conda-meta record is unreadable makes the whole prefix be
    reinstalled first (rattler plans its transaction from those records).  The
    reinstall goes through :func:`install_prefix`, so a run killed during a
    repair leaves the prefix marked incomplete.  Raises :class:`InstallError`
    when the prefix is still damaged afterwards.
    """
    prefix = Path(prefix)
    found = check_files(prefix, records, hashes=hashes)
    damage = found
    if not damage:
        return ()
    try:
        if any(d.problem == RECORD_UNREADABLE for d in damage):
            _wipe(prefix)
            install_prefix(prefix, records, records_hash, pkgs_dir=pkgs_dir, context=context)
            damage = check_files(prefix, records, hashes=hashes)  # what the cache brought back
        if damage:
            names = sorted({d.package for d in damage})
            damaged = [r for r in records if r.name.normalized in names]
            install_prefix(
                prefix, records, records_hash, pkgs_dir=pkgs_dir, context=context,
                reinstall=names, package_cache=_validating_cache(prefix, damaged, pkgs_dir),
            )
            damage = check_files(prefix, records, hashes=hashes)
        if damage:
            raise InstallError(
                f"{context or prefix}: {prefix} is still damaged after reinstalling it: "
                f"{describe_damage(damage)}",
                hint="the prefix is marked incomplete and will be installed afresh on the next "
                "run; if the damage persists, remove the package cache entries of "
                + ", ".join(sorted({d.label for d in damage})),
            )
    except Exception:
        # Known damage that could not be repaired: no later run may trust the prefix.
        if prefix.exists():
            meta_dir(prefix).mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                meta_dir(prefix) / INCOMPLETE_MARKER, {"pid": os.getpid(), "repair": "failed"}
            )
        raise
    return tuple(found)
