"""A whole test run: for each cell, prepare (solve, install, build, install build), then test.

This is what ``harness test``, the nox sessions and the pytest items call.
A cell that cannot run on this machine (no interpreter for its python pin in
the offline channel, a platform that is not this one) is *skipped with a
reason*, never a crash; a cell whose preparation fails is an *error* naming
the stage; the others still run.  Every run writes the JSON run report and
JUnit XML per cell under ``<cache>/reports/``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import warm
from harness.bytecode import share_prefix_bytecode
from harness.cache import Cache
from harness.cell import Cell
from harness.compile import DEFAULT_TEST_COMMAND
from harness.errors import HarnessError
from harness.execute import ImportCheck, TestPlan, execute
from harness.frozen import FrozenDict
from harness.gpu import (
    DEFAULT_POLICY,
    FAIL,
    RUN,
    SKIP,
    Gate,
    Runner,
    check_policy,
    detect_runner,
    gate,
    gpu_env,
)
from harness.report import FAILED, SKIPPED, RunReport, StageListener
from harness.run import TestOutcome
from harness.specs import variant_spec
from harness.stages import IMPORT_ROLE, PreparedCell, prepare, runs_here

OFFLINE = "offline"


@dataclass(frozen=True)
class RunResult:
    """Everything one run produced, per cell."""

    report: RunReport = field(compare=False)
    outcomes: FrozenDict[str, TestOutcome]
    skipped: FrozenDict[str, str]
    errors: FrozenDict[str, str]
    cells: tuple[str, ...]
    report_paths: tuple[Path, ...] = ()
    warm_records: tuple[str, ...] = ()  # cells whose warm-start record this run wrote

    @property
    def ok(self) -> bool:
        return not self.errors and all(o.ok for o in self.outcomes.values())


def group_by_cache(cells: Iterable[Cell]) -> dict[Path, list[Cell]]:
    """Cells grouped by the cache root they use (one per manifest unless overridden)."""
    groups: dict[Path, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(Cache.for_manifest(cell.manifest).root, []).append(cell)
    return groups


def uses_offline_channel(cells: Iterable[Cell]) -> bool:
    return any(OFFLINE in (c.strip() for c in cell.channels) for cell in cells)


def register_offline(cache: Cache) -> None:
    """Let ``channels = ["offline"]`` resolve to the offline channel under ``cache``'s root.

    Registered per cache root, right before that root's cells are prepared:
    the channel is built (or confirmed current, in milliseconds) on first use.
    """
    from harness.channel import register_offline_channel
    from harness.channel.cli import default_channel_root

    register_offline_channel(default_channel_root(cache.root), progress=_channel_progress)


def _channel_progress(message: str) -> None:
    print(f"[harness] offline channel: {message}", file=sys.stderr, flush=True)


def python_spec(cell: Cell) -> str | None:
    """The cell's python pin (variant first, then its dependencies), or ``None``."""
    if "python" in cell.variant:
        return variant_spec(cell.variant["python"])
    deps = [*cell.dependencies, *(cell.package.host_deps if cell.package else ())]
    for dep in deps:
        if dep.name == "python" and dep.version not in ("", "*"):
            return dep.version
    return None


def skip_reason(cell: Cell, cache: Cache) -> str | None:
    """Why ``cell`` cannot run on this machine, or ``None``.

    On the offline channel, the python packages are this machine's
    interpreters: a pin no interpreter matches is a skip, not a solve error.
    """
    if not runs_here(cell.platform):
        return None  # solved and locked, but not installed: prepare reports it per stage
    spec = python_spec(cell)
    if spec is None or OFFLINE not in (c.strip() for c in cell.channels):
        return None
    from harness.channel import build_offline_channel, find_python
    from harness.channel.cli import default_channel_root

    channel = build_offline_channel(default_channel_root(cache.root), progress=_channel_progress)
    match = find_python(channel, spec)
    return match.reason


def import_check(prepared: PreparedCell) -> str | None:
    """For a release build: the command that imports the package's modules in its clean prefix."""
    artifact = prepared.artifact
    if artifact is None or IMPORT_ROLE not in prepared.prefixes or not artifact.imports:
        return None
    return f'python -c "import {", ".join(artifact.imports)}"'


def import_env(prepared: PreparedCell) -> dict[str, str]:
    """The activated environment of the import-check prefix."""
    from harness.activation import activation_env

    env, _ = activation_env(
        prepared.prefixes[IMPORT_ROLE],
        records_hash=prepared.records_hashes[IMPORT_ROLE],
        extra=dict(prepared.cell.activation_env),
    )
    return env


def test_plan(prepared: PreparedCell, cache: Cache) -> TestPlan:
    """The test stage of a prepared cell: command, directory, environments and report paths."""
    cell = prepared.cell
    check = import_check(prepared)
    return TestPlan(
        cell=cell.id,
        command=cell.test_command or DEFAULT_TEST_COMMAND,
        cwd=cell.package.source_dir if cell.package is not None else cell.root,
        env=dict(prepared.env),
        junit=cache.reports_dir / "junit" / f"{cell.id}.xml",
        logs=cache.root / "logs" / cell.id,
        pycache=cache.root / "pycache",  # shared: the interpreter's own modules compile once
        import_check=None
        if check is None
        else ImportCheck(
            command=check,
            env=import_env(prepared),
            package=prepared.artifact.package if prepared.artifact else "the package",
        ),
    )


def run_cell(
    prepared: PreparedCell,
    cache: Cache,
    report: RunReport,
    *,
    extra_args: Sequence[str] = (),
    echo: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> TestOutcome:
    """Run the cell's test command (after the release import check) in its activated test prefix.

    ``extra_env`` is laid over the activated environment (the GPU variables of
    :func:`harness.gpu.gpu_env`): the prepared environment stays what the
    prefix alone defines, and what this runner adds is decided per run.
    """
    return execute(
        test_plan(prepared, cache), report, extra_args=extra_args, echo=echo, extra_env=extra_env
    )


def run_cells(
    cells: Sequence[Cell],
    *,
    extra_args: Sequence[str] = (),
    test: bool = True,
    build: bool = True,
    update: bool = False,
    listener: StageListener | None = None,
    echo: bool = True,
    gpu_policy: str = DEFAULT_POLICY,
    repair: bool = False,
) -> RunResult:
    """Prepare and (if ``test``) test every cell; failures are recorded per cell, never raised.

    ``gpu_policy`` (``skip`` | ``require`` | ``ignore``) says what happens to a
    cell that needs a CUDA driver this runner lacks; it is decided before
    anything is solved or built.  Without tests (``harness solve`` and
    ``harness build``) nothing is gated: solves use the cell's declared virtual
    packages (rattler-build's own solve too), so a GPU cell's lock and build
    are made on any machine, as CI builds CUDA packages on CPU runners.  A
    malformed policy, or (when testing) a malformed ``CONDA_OVERRIDE_CUDA``,
    concerns the whole run and is raised as a :class:`HarnessError`.
    ``repair`` checks every installed file of every prefix and reinstalls the
    damaged packages (:func:`harness.prefix.repair_prefix`).
    """
    check_policy(gpu_policy)
    runner = detect_runner() if test and cells else None
    report = RunReport(listener=listener)
    outcomes: dict[str, TestOutcome] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    paths: list[Path] = []
    recorded: list[str] = []
    for group in group_by_cache(cells).values():
        cache = Cache.for_manifest(group[0].manifest)
        cache.ensure()
        gates = {c.id: _decide(c, runner, gpu_policy) for c in group}
        if uses_offline_channel([c for c in group if gates[c.id].action == RUN]):
            register_offline(cache)
        for cell in group:
            try:
                if _gated_out(cell, gates[cell.id], report, skipped, errors):
                    continue
                reason = skip_reason(cell, cache)
                if reason is not None:
                    skipped[cell.id] = reason
                    report.record(cell.id, "cell", "skipped", reason)
                    continue
                # The cell's lock covers prepare *and* the tests: gc and other
                # runs never change a prefix while its tests use it.
                with cache.cell_lock(cell.id):
                    seen = warm.forget_record(cache, cell) if test else None
                    prepared = prepare(
                        cell, cache=cache, update=update, report=report, build=build, repair=repair
                    )
                    if not test:
                        continue
                    if not prepared.installed:
                        skipped[cell.id] = f"{cell.platform} cannot run on this machine"
                        continue
                    extra_env = gpu_env(cell, runner) if runner is not None else None
                    plan = test_plan(prepared, cache)
                    if seen is not None:
                        warm.write_record(
                            cache, prepared, plan, seen, report=report, extra_env=extra_env
                        )
                        recorded.append(cell.id)
                    outcomes[cell.id] = execute(
                        plan, report, extra_args=extra_args, echo=echo, extra_env=extra_env
                    )
                    if plan.pycache is not None:  # still under the lock: the prefixes stay put
                        share_prefix_bytecode(
                            plan.pycache, prepared.prefixes.values(), cache.bytecode_store
                        )
            except HarnessError as exc:
                errors[cell.id] = str(exc)
                _note_failure(report, cell.id, str(exc))
            except Exception as exc:  # a bug or a library error: the cell fails, the run goes on
                errors[cell.id] = f"{type(exc).__name__}: {exc}"
                _note_failure(report, cell.id, errors[cell.id])
        report.extra["tests"] = {cid: o.to_json() for cid, o in outcomes.items()}
        report.extra["skipped"] = dict(skipped)
        report.extra["errors"] = dict(errors)
        paths.append(report.write(cache))
    return RunResult(
        report=report,
        outcomes=FrozenDict(outcomes),
        skipped=FrozenDict(skipped),
        errors=FrozenDict(errors),
        cells=tuple(c.id for c in cells),
        report_paths=tuple(paths),
        warm_records=tuple(recorded),
    )


def _decide(cell: Cell, runner: Runner | None, policy: str) -> Gate:
    """The GPU gate of ``cell``; a cell whose CUDA declaration cannot be read fails alone."""
    if runner is None:
        return Gate(RUN)
    try:
        return gate(cell, runner, policy)
    except HarnessError as exc:
        return Gate(FAIL, str(exc))


def _gated_out(
    cell: Cell,
    decision: Gate,
    report: RunReport,
    skipped: dict[str, str],
    errors: dict[str, str],
) -> bool:
    """Record a cell the GPU gate keeps from running (skipped or failed); ``False`` if it runs."""
    if decision.action == SKIP:
        skipped[cell.id] = decision.reason
        report.record(cell.id, "cell", SKIPPED, decision.reason)
        return True
    if decision.action == FAIL:
        errors[cell.id] = decision.reason
        report.record(cell.id, "cell", FAILED, decision.reason)
        return True
    return False


def _note_failure(report: RunReport, cell_id: str, message: str) -> None:
    if not any(r.status == FAILED for r in report.select(cell=cell_id)):
        report.record(cell_id, "prepare", FAILED, message)
