"""Orchestration: from a cell to a ready environment (solve -> lock -> install -> pypi -> activate).

This is the API the CLI, nox and pytest front-ends call.  Each stage has an
input hash and is skipped (reported ``cached``) when the recorded hash
matches; nothing else decides whether work is redone (DESIGN invariant 2).
:func:`prepare` holds the cell's file lock from the first read to the last
write, so two processes on one cell serialise, and the second one finds
everything cached (invariant 5).  :func:`plan` only reads: it never solves,
installs or takes a lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from rattler import Gateway, RepoDataRecord, Subdir

from harness.activation import activation_env
from harness.cache import Cache
from harness.cell import Cell, digest
from harness.channels import ResolvedChannel, resolve_channels
from harness.errors import InstallError
from harness.frozen import FrozenDict
from harness.lock import (
    LockedRole,
    LockState,
    changed_fields,
    read_lock,
    record_identity,
    role_material,
    warn_untrusted,
    write_lock,
)
from harness.prefix import CURRENT, INCOMPLETE, MISSING, install_prefix, prefix_state
from harness.pypi import install_pypi, pypi_current, pypi_hash, requirements
from harness.report import FAILED, RunReport
from harness.solve import TEST_ROLE, RoleRequest, role_requests, solve_role

TO_DO = "to do"
CACHED = "cached"
SKIPPED = "skipped"


@dataclass(frozen=True)
class PreparedCell:
    """A cell whose environments exist: prefixes and records per role, and the test environment."""

    cell: Cell
    lock_path: Path
    prefixes: FrozenDict[str, Path]
    records: FrozenDict[str, tuple[RepoDataRecord, ...]] = field(compare=False)
    records_hashes: FrozenDict[str, str]
    env: FrozenDict[str, str] = field(default_factory=FrozenDict)  # activated test prefix
    installed: bool = True  # False when the cell's platform cannot run here (solve only)

    def packages(self, role: str) -> list[dict[str, Any]]:
        """Resolved packages of ``role`` (name, version, build, sha256, ...) for variant keys."""
        return sorted(
            (record_identity(r) for r in self.records.get(role, ())), key=lambda d: d["name"]
        )

    @property
    def test_prefix(self) -> Path | None:
        return self.prefixes.get(TEST_ROLE)


@dataclass(frozen=True)
class PlanStep:
    """One stage of a plan: will it run, and why (``no lock``, ``inputs changed: specs``...)."""

    stage: str
    role: str | None
    status: str  # "cached" | "to do" | "skipped"
    reason: str

    def __str__(self) -> str:
        return f"{self.stage:<16} {self.status:<7} {self.reason}"


@dataclass(frozen=True)
class PrepareOutcome:
    """What :func:`prepare_many` achieved: prepared cells and, per failed cell, its error."""

    prepared: FrozenDict[str, PreparedCell]
    failures: FrozenDict[str, Exception]

    @property
    def ok(self) -> bool:
        return not self.failures


def runs_here(platform: str) -> bool:
    """Whether prefixes of ``platform`` can be installed and run on this machine."""
    return platform in (str(Subdir.current()), "noarch")


def _channels(cell: Cell) -> tuple[ResolvedChannel, ...]:
    return resolve_channels(cell.channels, cell.root, manifest=cell.manifest)


def _solve_reason(
    state: LockState, old: LockedRole | None, material: Mapping[str, Any]
) -> str | None:
    """Why a role must be re-solved, or ``None`` when its lock entry is current."""
    if state.problem:
        return f"lock untrusted: {state.problem}"
    if not state.exists:
        return "no lock"
    if old is None:
        return "no lock entry for this environment"
    if digest(dict(old.material)) != digest(dict(material)):
        return "inputs changed: " + ", ".join(changed_fields(old.material, material))
    return None


# -- prepare -----------------------------------------------------------------------------


def _solve_all(
    cell: Cell,
    cache: Cache,
    channels: tuple[ResolvedChannel, ...],
    requests: tuple[RoleRequest, ...],
    *,
    update: bool,
    report: RunReport,
    gateway: Gateway | None,
) -> tuple[dict[str, LockedRole], Path]:
    state = read_lock(cache, cell)
    if state.problem:
        warn_untrusted(cell, state)
    roles: dict[str, LockedRole] = {}
    changed = bool(state.problem) or set(state.roles) != {r.role for r in requests}
    for request in requests:
        material = role_material(cell, request, channels)
        old = state.roles.get(request.role)
        with report.stage(cell.id, f"solve:{request.role}") as stage:
            reason = "update requested" if update else _solve_reason(state, old, material)
            if reason is None and old is not None:
                roles[request.role] = old
                stage.cached("lock matches inputs")
                continue
            records = solve_role(cell, request, channels, gateway=gateway)
            roles[request.role] = LockedRole(request.role, tuple(records), material)
            changed = True
            stage.done(reason or "")
    if changed:
        write_lock(cache, cell, channels, roles)
    return roles, state.lock_path


def prepare(
    cell: Cell,
    *,
    cache: Cache,
    update: bool = False,
    report: RunReport,
    gateway: Gateway | None = None,
    base_env: Mapping[str, str] | None = None,
) -> PreparedCell:
    """Solve, lock, install, pip-install and activate every environment ``cell`` needs.

    Stages whose inputs are unchanged do no work and are reported ``cached``.
    Raises a :class:`~harness.errors.HarnessError` (``SolveError``,
    ``InstallError``, ``ChannelError``...) naming the cell on failure.
    """
    cache.ensure()
    channels = _channels(cell)
    requests = role_requests(cell)
    native = runs_here(cell.platform)
    with cache.cell_lock(cell.id):
        roles, lock_file = _solve_all(
            cell, cache, channels, requests, update=update, report=report, gateway=gateway
        )
        prefixes = {role: cache.prefix(cell.id, role) for role in roles}
        hashes = {role: locked.records_hash for role, locked in roles.items()}
        for role, locked in roles.items():
            with report.stage(cell.id, f"install:{role}") as stage:
                if not native:
                    stage.skipped(
                        f"{cell.platform} prefixes cannot be installed on {Subdir.current()}"
                    )
                    continue
                before = install_prefix(
                    prefixes[role],
                    locked.records,
                    hashes[role],
                    pkgs_dir=cache.pkgs_dir,
                    context=f"cell {cell.id!r}, environment {role!r}",
                )
                if before.status == CURRENT:
                    stage.cached(before.reason)
                else:
                    stage.done(before.reason)
        env: dict[str, str] = {}
        test_prefix = prefixes.get(TEST_ROLE)
        if cell.pypi_dependencies:
            with report.stage(cell.id, "pypi") as stage:
                if not native:
                    stage.skipped(f"{cell.platform} cannot run here")
                elif test_prefix is None:
                    raise InstallError(
                        f"cell {cell.id!r} has pypi-dependencies but no conda dependencies to "
                        "install them into",
                        file=cell.manifest,
                        hint="add `python` to the environment's [dependencies]",
                    )
                else:
                    reqs = requirements(cell.pypi_dependencies, cell.root, manifest=cell.manifest)
                    did = install_pypi(
                        test_prefix,
                        reqs,
                        conda_hash=hashes[TEST_ROLE],
                        context=f"cell {cell.id!r}",
                    )
                    if did:
                        stage.done(f"{len(reqs)} requirements")
                    else:
                        stage.cached("pypi dependencies unchanged")
        if native and test_prefix is not None:
            with report.stage(cell.id, "activate") as stage:
                env, cached = activation_env(
                    test_prefix,
                    records_hash=hashes[TEST_ROLE],
                    extra=dict(cell.activation_env),
                    base_env=base_env,
                )
                if cached:
                    stage.cached("activation cached")
    return PreparedCell(
        cell=cell,
        lock_path=lock_file,
        prefixes=FrozenDict(prefixes),
        records=FrozenDict({role: locked.records for role, locked in roles.items()}),
        records_hashes=FrozenDict(hashes),
        env=FrozenDict(env),
        installed=native,
    )


def prepare_many(
    cells: Iterable[Cell],
    *,
    cache: Cache,
    update: bool = False,
    report: RunReport,
    gateway: Gateway | None = None,
) -> PrepareOutcome:
    """:func:`prepare` each cell; a failing cell is recorded and the others still run."""
    prepared: dict[str, PreparedCell] = {}
    failures: dict[str, Exception] = {}
    for cell in cells:
        try:
            prepared[cell.id] = prepare(
                cell, cache=cache, update=update, report=report, gateway=gateway
            )
        except Exception as exc:
            failures[cell.id] = exc
            if not any(r.status == FAILED for r in report.select(cell=cell.id)):
                report.record(cell.id, "prepare", FAILED, str(exc) or type(exc).__name__)
    return PrepareOutcome(prepared=FrozenDict(prepared), failures=FrozenDict(failures))


# -- plan ---------------------------------------------------------------------------------


def plan(cell: Cell, cache: Cache) -> list[PlanStep]:
    """What :func:`prepare` would do for ``cell`` and why; reads only (no solve, no lock, no write)."""
    channels = _channels(cell)
    requests = role_requests(cell)
    state = read_lock(cache, cell)
    native = runs_here(cell.platform)
    steps: list[PlanStep] = []
    resolve: dict[str, bool] = {}
    for request in requests:
        material = role_material(cell, request, channels)
        old = state.roles.get(request.role)
        reason = _solve_reason(state, old, material)
        resolve[request.role] = reason is not None
        steps.append(
            PlanStep(
                f"solve:{request.role}",
                request.role,
                TO_DO if reason else CACHED,
                reason or "lock matches inputs",
            )
        )
    install_todo: dict[str, bool] = {}
    for request in requests:
        role = request.role
        stage = f"install:{role}"
        if not native:
            steps.append(
                PlanStep(stage, role, SKIPPED, f"{cell.platform} cannot be installed here")
            )
            install_todo[role] = False
            continue
        old = None if resolve[role] else state.roles.get(role)
        ps = prefix_state(
            cache.prefix(cell.id, role), old.records_hash if old else "", old.records if old else ()
        )
        if old is None:
            why = (
                ps.reason
                if ps.status in (MISSING, INCOMPLETE)
                else "after solve, if the lock changes"
            )
            steps.append(PlanStep(stage, role, TO_DO, why))
            install_todo[role] = True
        elif ps.current:
            steps.append(PlanStep(stage, role, CACHED, ps.reason))
            install_todo[role] = False
        else:
            steps.append(PlanStep(stage, role, TO_DO, ps.reason))
            install_todo[role] = True
    if cell.pypi_dependencies:
        if not native:
            steps.append(PlanStep("pypi", TEST_ROLE, SKIPPED, f"{cell.platform} cannot run here"))
        elif TEST_ROLE not in resolve:
            steps.append(
                PlanStep("pypi", TEST_ROLE, TO_DO, "no test environment (fails: add python)")
            )
        elif resolve[TEST_ROLE] or install_todo.get(TEST_ROLE):
            steps.append(PlanStep("pypi", TEST_ROLE, TO_DO, "after install"))
        else:
            old = state.roles[TEST_ROLE]
            try:
                reqs = requirements(cell.pypi_dependencies, cell.root, manifest=cell.manifest)
                current = pypi_current(
                    cache.prefix(cell.id, TEST_ROLE), pypi_hash(reqs, old.records_hash)
                )
            except InstallError as exc:
                steps.append(PlanStep("pypi", TEST_ROLE, TO_DO, f"fails: {exc.message}"))
            else:
                steps.append(
                    PlanStep(
                        "pypi",
                        TEST_ROLE,
                        CACHED if current else TO_DO,
                        "pypi dependencies unchanged"
                        if current
                        else "pypi dependencies changed or not installed",
                    )
                )
    return steps


def safe_exit(code: int) -> NoReturn:
    """Exit without the interpreter's shutdown, where rattler's threads can crash it (rc 134/139).

    py-rattler's background threads may still hold the GIL machinery when
    Python finalises after ``index_fs`` or a cold-cache install; the crash
    would turn a successful run into a failed CI job.  Flush, then ``_exit``.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
