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

from harness import faults
from harness.activation import activation_env
from harness.build.driver import (
    Artifact,
    BuildInputs,
    artifact_records,
    build_package,
    plan_build,
    read_artifact,
)
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
    records_digest,
    role_material,
    warn_untrusted,
    write_lock,
)
from harness.prefix import (
    CURRENT,
    INCOMPLETE,
    MISSING,
    describe_damage,
    install_prefix,
    prefix_state,
    repair_prefix,
)
from harness.pypi import install_pypi, pypi_current, pypi_hash, requirements
from harness.report import FAILED, RunReport
from harness.report import SKIPPED as SKIPPED_STATUS
from harness.solve import TEST_ROLE, RoleRequest, role_requests, solve_role

TO_DO = "to do"
#: The release import check's prefix: the built package and its ``depends`` only.
IMPORT_ROLE = "import"
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
    artifact: Artifact | None = None  # the cell's build, when it builds a package

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


def _solve_one(
    cell: Cell,
    request: RoleRequest,
    channels: tuple[ResolvedChannel, ...],
    state: LockState,
    *,
    update: bool,
    report: RunReport,
    gateway: Gateway | None,
) -> tuple[LockedRole, bool]:
    """Solve one role unless its lock entry matches its inputs; returns ``(role, re-solved)``."""
    material = role_material(cell, request, channels)
    old = state.roles.get(request.role)
    with report.stage(cell.id, f"solve:{request.role}") as stage:
        reason = "update requested" if update else _solve_reason(state, old, material)
        if reason is None and old is not None:
            stage.cached("lock matches inputs")
            return old, False
        records = solve_role(cell, request, channels, gateway=gateway)
        stage.done(reason or "")
        return LockedRole(request.role, tuple(records), material), True


def _install_role(
    cell: Cell,
    role: str,
    prefix: Path,
    records: tuple[RepoDataRecord, ...],
    records_hash: str,
    *,
    cache: Cache,
    native: bool,
    report: RunReport,
    repair: bool = False,
) -> None:
    with report.stage(cell.id, f"install:{role}") as stage:
        if not native:
            stage.skipped(f"{cell.platform} prefixes cannot be installed on {Subdir.current()}")
            return
        context = f"cell {cell.id!r}, environment {role!r}"
        before = install_prefix(
            prefix,
            records,
            records_hash,
            pkgs_dir=cache.pkgs_dir,
            context=context,
        )
        # Even a fresh install is checked: it links from the shared package cache,
        # which a file edited in place in another prefix (a hard link) damages too.
        damage = (
            repair_prefix(prefix, records, records_hash, pkgs_dir=cache.pkgs_dir, context=context)
            if repair
            else ()
        )
        if damage:
            where = prefix.relative_to(cache.root) if prefix.is_relative_to(cache.root) else prefix
            stage.done(f"repaired: {where}: {describe_damage(damage)}")
        elif before.status == CURRENT:
            stage.cached(before.reason)
        else:
            stage.done(before.reason)


def import_request(cell: Cell, artifact: Artifact) -> RoleRequest:
    """The release import check's environment: the package and its variant pins, nothing else."""
    return RoleRequest(IMPORT_ROLE, (artifact.spec, *cell.variant_pins()))


def _build_inputs(
    cell: Cell, roles: Mapping[str, LockedRole], prefixes: Mapping[str, Path], channels: tuple[ResolvedChannel, ...]
) -> BuildInputs:
    def packages(role: str) -> tuple[dict[str, Any], ...]:
        locked = roles.get(role)
        return tuple(record_identity(r) for r in locked.records) if locked else ()

    return BuildInputs(
        build_prefix=prefixes.get("build"),
        host_prefix=prefixes.get("host"),
        build_packages=packages("build"),
        host_packages=packages("host"),
        channels=tuple(c.url for c in channels),
    )


def prepare(
    cell: Cell,
    *,
    cache: Cache,
    update: bool = False,
    report: RunReport,
    gateway: Gateway | None = None,
    base_env: Mapping[str, str] | None = None,
    build: bool = True,
    repair: bool = False,
) -> PreparedCell:
    """Solve, install, build, install the build, pip-install and activate: everything before the tests.

    Stages whose inputs are unchanged do no work and are reported ``cached``.
    ``build=False`` stops before the build (``harness solve``): a release cell
    then has no test environment yet.  ``repair=True`` also checks every file
    of every prefix against conda-meta (existence, type, size) and reinstalls
    the damaged packages, reported as ``repaired: envs/<cell>/<role>: ...``;
    without it a current prefix is trusted on its markers alone.  Raises a
    :class:`~harness.errors.HarnessError` (``SolveError``, ``InstallError``,
    ``BuildError``...) naming the cell on failure.
    """
    cache.ensure()
    channels = _channels(cell)
    native = runs_here(cell.platform)
    with cache.cell_lock(cell.id):
        state = read_lock(cache, cell)
        if state.problem:
            warn_untrusted(cell, state)
        roles: dict[str, LockedRole] = {}
        resolved_any = False
        prefixes: dict[str, Path] = {}
        hashes: dict[str, str] = {}
        for request in role_requests(cell):
            if request.role == TEST_ROLE:
                continue
            roles[request.role], did = _solve_one(
                cell, request, channels, state, update=update, report=report, gateway=gateway
            )
            resolved_any |= did
        if resolved_any:  # publish the lock before installing: a killed install re-solves nothing
            faults.point("stages.roles-solved")
            carried = {r: v for r, v in state.roles.items() if r == TEST_ROLE}
            write_lock(cache, cell, channels, {**roles, **carried})
        for role, locked in roles.items():
            prefixes[role] = cache.prefix(cell.id, role)
            hashes[role] = locked.records_hash
            _install_role(
                cell, role, prefixes[role], locked.records, hashes[role],
                cache=cache, native=native, report=report, repair=repair,
            )

        artifact: Artifact | None = None
        if cell.package is not None:
            with report.stage(cell.id, "build") as stage:
                if not native:
                    stage.skipped(f"{cell.platform} packages cannot be built on {Subdir.current()}")
                elif not build:
                    stage.skipped("not requested")
                else:
                    artifact, built = build_package(
                        cell, cache, _build_inputs(cell, roles, prefixes, channels)
                    )
                    note = f"{artifact.package} {artifact.build} ({artifact.directory.name})"
                    if built:
                        stage.done(note)
                    else:
                        stage.cached(note)

        release = cell.package is not None and cell.profile_base == "release"
        test_channels = channels
        if release and artifact is not None:
            test_channels = (
                ResolvedChannel(written="(build)", url=artifact.channel_url, local_path=artifact.directory),
                *channels,
            )
        test_requests = [
            r for r in role_requests(cell, artifact.spec if artifact else None) if r.role == TEST_ROLE
        ]
        if cell.package is not None and release and artifact is None:
            report.record(cell.id, f"solve:{TEST_ROLE}", SKIPPED_STATUS, "needs the release build")
        for request in test_requests:
            locked, did = _solve_one(
                cell, request, test_channels, state, update=update, report=report, gateway=gateway
            )
            roles[TEST_ROLE] = locked
            if did:
                faults.point("stages.test-solved")
                write_lock(cache, cell, channels, roles)
            records = locked.records
            if artifact is not None and not release:
                records = (*records, *artifact_records(artifact, gateway=gateway))
            prefixes[TEST_ROLE] = cache.prefix(cell.id, TEST_ROLE)
            hashes[TEST_ROLE] = records_digest(records)
            _install_role(
                cell, TEST_ROLE, prefixes[TEST_ROLE], records, hashes[TEST_ROLE],
                cache=cache, native=native, report=report, repair=repair,
            )
        if release and artifact is not None and artifact.imports:
            # The import check's own prefix: the package and nothing but what its
            # ``depends`` bring (the test prefix also holds the test tools and their
            # dependencies, which can hide a forgotten run-dependency).
            request = import_request(cell, artifact)
            locked, did = _solve_one(
                cell, request, test_channels, state, update=update, report=report, gateway=gateway
            )
            roles[IMPORT_ROLE] = locked
            if did:
                write_lock(cache, cell, channels, roles)
            prefixes[IMPORT_ROLE] = cache.prefix(cell.id, IMPORT_ROLE)
            hashes[IMPORT_ROLE] = locked.records_hash
            _install_role(
                cell, IMPORT_ROLE, prefixes[IMPORT_ROLE], locked.records, hashes[IMPORT_ROLE],
                cache=cache, native=native, report=report, repair=repair,
            )
        if state.problem or set(state.roles) != set(roles):
            write_lock(cache, cell, channels, roles)

        env: dict[str, str] = {}
        test_prefix = prefixes.get(TEST_ROLE)
        if cell.pypi_dependencies and not (release and artifact is None):
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
        from harness.gc import mark_used

        mark_used(cache, cell.id, artifact)  # for `harness gc --older-than`
    return PreparedCell(
        cell=cell,
        lock_path=state.lock_path,
        prefixes=FrozenDict(prefixes),
        records=FrozenDict({role: locked.records for role, locked in roles.items()}),
        records_hashes=FrozenDict(hashes),
        env=FrozenDict(env),
        installed=native,
        artifact=artifact,
    )


def prepare_many(
    cells: Iterable[Cell],
    *,
    cache: Cache,
    update: bool = False,
    report: RunReport,
    gateway: Gateway | None = None,
    build: bool = True,
    repair: bool = False,
) -> PrepareOutcome:
    """:func:`prepare` each cell; a failing cell is recorded and the others still run."""
    prepared: dict[str, PreparedCell] = {}
    failures: dict[str, Exception] = {}
    for cell in cells:
        try:
            prepared[cell.id] = prepare(
                cell, cache=cache, update=update, report=report, gateway=gateway, build=build,
                repair=repair,
            )
        except Exception as exc:
            failures[cell.id] = exc
            if not any(r.status == FAILED for r in report.select(cell=cell.id)):
                report.record(cell.id, "prepare", FAILED, str(exc) or type(exc).__name__)
    return PrepareOutcome(prepared=FrozenDict(prepared), failures=FrozenDict(failures))


# -- plan ---------------------------------------------------------------------------------


def _plan_install(
    cell: Cell, cache: Cache, role: str, locked: LockedRole | None, extra: tuple[RepoDataRecord, ...] = ()
) -> PlanStep:
    stage = f"install:{role}"
    prefix = cache.prefix(cell.id, role)
    if locked is None:
        ps = prefix_state(prefix, "", ())
        why = ps.reason if ps.status in (MISSING, INCOMPLETE) else "after solve, if the lock changes"
        return PlanStep(stage, role, TO_DO, why)
    records = (*locked.records, *extra)
    ps = prefix_state(prefix, records_digest(records), records)
    return PlanStep(stage, role, CACHED if ps.current else TO_DO, ps.reason)


def plan(cell: Cell, cache: Cache) -> list[PlanStep]:
    """What :func:`prepare` would do for ``cell`` and why; reads only (no solve, no lock, no write)."""
    channels = _channels(cell)
    state = read_lock(cache, cell)
    native = runs_here(cell.platform)
    steps: list[PlanStep] = []
    current: dict[str, LockedRole | None] = {}
    test_hash: str | None = None

    def solve_step(request: RoleRequest, chans: tuple[ResolvedChannel, ...]) -> None:
        material = role_material(cell, request, chans)
        old = state.roles.get(request.role)
        reason = _solve_reason(state, old, material)
        current[request.role] = None if reason else old
        steps.append(
            PlanStep(f"solve:{request.role}", request.role, TO_DO if reason else CACHED,
                     reason or "lock matches inputs")
        )

    def install_step(role: str, extra: tuple[RepoDataRecord, ...] = ()) -> None:
        if not native:
            steps.append(PlanStep(f"install:{role}", role, SKIPPED, f"{cell.platform} cannot be installed here"))
        else:
            steps.append(_plan_install(cell, cache, role, current.get(role), extra))

    env_requests = [r for r in role_requests(cell) if r.role != TEST_ROLE]
    for request in env_requests:
        solve_step(request, channels)
    for request in env_requests:
        install_step(request.role)

    artifact: Artifact | None = None
    build_known = True
    if cell.package is not None:
        if not native:
            steps.append(PlanStep("build", None, SKIPPED, f"{cell.platform} cannot be built here"))
            build_known = False
        elif any(current.get(r.role) is None for r in env_requests):
            steps.append(PlanStep("build", None, TO_DO, "after the build and host environments are solved"))
            build_known = False
        else:
            inputs = BuildInputs(
                build_prefix=cache.prefix(cell.id, "build"),
                host_prefix=cache.prefix(cell.id, "host"),
                build_packages=tuple(record_identity(r) for r in current["build"].records)
                if current.get("build") else (),
                host_packages=tuple(record_identity(r) for r in current["host"].records)
                if current.get("host") else (),
            )
            bplan = plan_build(cell, cache, inputs)
            artifact = read_artifact(bplan.artifact_dir)
            if artifact is not None:
                steps.append(PlanStep("build", None, CACHED,
                                      f"artifact {bplan.key.key}-{bplan.fingerprint} exists"))
            else:
                same_key = list(bplan.artifact_dir.parent.glob(f"{bplan.key.key}-*"))
                why = ("sources changed; the build directory is reused" if same_key
                       else f"no build for variant key {bplan.key.key} yet")
                steps.append(PlanStep("build", None, TO_DO, why))
                build_known = False

    release = cell.package is not None and cell.profile_base == "release"
    if cell.package is not None and not build_known:
        steps.append(PlanStep(f"solve:{TEST_ROLE}" if release else f"install:{TEST_ROLE}", TEST_ROLE,
                              TO_DO, "after the build"))
        return steps
    test_channels = channels
    if release and artifact is not None:
        test_channels = (
            ResolvedChannel(written="(build)", url=artifact.channel_url, local_path=artifact.directory),
            *channels,
        )
    for request in role_requests(cell, artifact.spec if artifact else None):
        if request.role != TEST_ROLE:
            continue
        solve_step(request, test_channels)
        extra: tuple[RepoDataRecord, ...] = ()
        if artifact is not None and not release:
            extra = tuple(artifact_records(artifact))
        install_step(TEST_ROLE, extra)
        locked = current.get(TEST_ROLE)
        test_hash = records_digest((*locked.records, *extra)) if locked else None
    if release and artifact is not None and artifact.imports:
        solve_step(import_request(cell, artifact), test_channels)
        install_step(IMPORT_ROLE)
    if cell.pypi_dependencies:
        steps.append(_plan_pypi(cell, cache, native, test_hash, steps))
    return steps


def _plan_pypi(
    cell: Cell, cache: Cache, native: bool, test_hash: str | None, steps: list[PlanStep]
) -> PlanStep:
    if not native:
        return PlanStep("pypi", TEST_ROLE, SKIPPED, f"{cell.platform} cannot run here")
    if not any(s.role == TEST_ROLE for s in steps):
        return PlanStep("pypi", TEST_ROLE, TO_DO, "no test environment (fails: add python)")
    if test_hash is None or any(s.role == TEST_ROLE and s.status == TO_DO for s in steps):
        return PlanStep("pypi", TEST_ROLE, TO_DO, "after install")
    try:
        reqs = requirements(cell.pypi_dependencies, cell.root, manifest=cell.manifest)
        current = pypi_current(cache.prefix(cell.id, TEST_ROLE), pypi_hash(reqs, test_hash))
    except InstallError as exc:
        return PlanStep("pypi", TEST_ROLE, TO_DO, f"fails: {exc.message}")
    return PlanStep("pypi", TEST_ROLE, CACHED if current else TO_DO,
                    "pypi dependencies unchanged" if current else "pypi dependencies changed or not installed")


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
