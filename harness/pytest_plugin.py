"""pytest front-end: matrix files as test files, one test item per cell.

``pytest matrices/demo.toml`` (or ``pytest matrices/``) collects every cell of
the matrix as an item named by the cell id, so ``-k py312``, ``--junitxml``
and ``-n 4`` (pytest-xdist) work as for any test.  An item runs its cell
through :func:`harness.pipeline.run_cells`: solve, install, build, install the
build, run the cell's own test command; the item passes when that command
passes, is skipped when the pipeline skips the cell (no interpreter for its
python pin here, no GPU driver for a GPU cell) and fails with the inner
failing tests, the log and the JUnit file otherwise.

Matrix files are collected only when named on the command line (or in the
``testpaths`` setting), or when the directory holding them is: a bare
``pytest``, or one over a project's ``tests/``, never starts building the
whole matrix by accident.

Projects that write their own per-cell tests use :func:`cells` and the
``harness_cell`` fixture::

    @pytest.mark.parametrize("harness_cell", cells("matrices/demo.toml"), indirect=True)
    def test_cli(harness_cell):
        subprocess.run(["pointops", "--help"], env=dict(harness_cell.env), check=True)

Parallel workers need no coordination from here: the harness's file locks
serialise two processes that work on one cell or one build key.  Nothing here
relies on ``--dist loadgroup``: with pytest 9.2 and pytest-xdist 3.8 its
``xdist_group`` marks no longer reach the scheduler (xdist still rewrites a
node id field that pytest 9.2 stopped reading), so grouped items are spread
over workers like any others.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.cell import Cell
from harness.errors import HarnessError
from harness.frozen import FrozenDict

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

    from harness.pipeline import RunResult
    from harness.run import TestOutcome
    from harness.stages import PreparedCell

GPU_POLICIES = ("skip", "require", "ignore")
#: Manifests are never matrix files, whatever directory holds them.
NOT_MATRICES = ("pixi.toml", "pyproject.toml")
MATRIX_DIRNAME = "matrices"

_state = {"used_rattler": False}


class MatrixWarning(UserWarning):
    """A warning the harness gave while compiling a matrix file (deprecated spelling, unused key)."""


# -- options and hooks --------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "variant-harness (matrix files as tests)")
    group.addoption(
        "--gpu",
        dest="harness_gpu",
        choices=GPU_POLICIES,
        default="skip",
        help="cells that need a GPU driver this runner lacks: skip them (default), "
        "fail them (require) or run them anyway (ignore)",
    )
    group.addoption(
        "--harness-update",
        dest="harness_update",
        action="store_true",
        default=False,
        help="re-solve every cell's environments instead of reusing their lock entries",
    )


def is_matrix_file(path: Path) -> bool:
    """A ``.toml`` the harness reads as a matrix: one naming a manifest, or any file in ``matrices/``.

    A TOML file in ``matrices/`` that does not parse still counts, so its
    error is reported instead of the file being passed over in silence.
    """
    if path.suffix != ".toml" or path.name in NOT_MATRICES:
        return False
    if path.parent.name == MATRIX_DIRNAME:
        return True
    from harness.loader import is_matrix

    return is_matrix(path)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> MatrixFile | None:
    """Collect a matrix file named on the command line (or in ``testpaths``), or held by a
    directory named there; a bare ``pytest`` in a project collects none."""
    session = parent.session
    if session.config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR:
        return None
    named = session.isinitpath(file_path) or session.isinitpath(file_path.parent)
    if named and is_matrix_file(file_path):
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give rattler's background threads a moment before the interpreter exits.

    Without it, a process that has just extracted packages with rattler can
    crash while it shuts down, after all its work is done.
    """
    if _state["used_rattler"] or os.environ.get("HARNESS_USED_RATTLER"):
        time.sleep(0.1)


# -- collection -----------------------------------------------------------------------------


class MatrixFile(pytest.File):
    """A matrix file: its cells, compiled without solving anything, are its items."""

    def collect(self) -> list[CellItem]:
        from harness.loader import compile_path

        try:
            compiled = compile_path(self.path)
        except HarnessError as exc:
            raise self.CollectError(str(exc)) from None
        for warning in compiled.warnings:
            self.warn(MatrixWarning(warning))
        return [CellItem.from_parent(self, name=cell.id, cell=cell) for cell in compiled.cells]


class CellFailed(Exception):
    """A cell whose own test command failed; :meth:`CellItem.repr_failure` renders it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class CellItem(pytest.Item):
    """One cell of a matrix file, run end to end by the harness pipeline."""

    def __init__(self, *, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = cell
        # `-k gpu`, `-k release`, `-k cpu` select on the cell's tags and profile too.
        self.extra_keyword_matches.update((*cell.tags, cell.profile))

    def runtest(self) -> None:
        cell_id = self.cell.id
        result = run_one(self.config, self.cell)
        self.user_properties.append(("cell", cell_id))
        if cell_id in result.skipped:
            self.user_properties.append(("skip_reason", result.skipped[cell_id]))
            pytest.skip(f"{cell_id}: {result.skipped[cell_id]}")
        if cell_id in result.errors:
            self.user_properties.append(("error", result.errors[cell_id]))
            pytest.fail(result.errors[cell_id], pytrace=False)
        outcome = result.outcomes.get(cell_id)
        if outcome is None:
            pytest.fail(f"cell {cell_id} produced no test outcome", pytrace=False)
        self.user_properties += outcome_properties(outcome)
        if not outcome.ok:
            raise CellFailed(describe_failure(outcome))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if isinstance(excinfo.value, CellFailed):
            return excinfo.value.text
        if isinstance(excinfo.value, HarnessError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"cell {self.cell.id}"


def run_one(config: pytest.Config, cell: Cell) -> RunResult:
    """:func:`harness.pipeline.run_cells` of one cell with the session's options.

    The inner output is echoed only under ``-s``; otherwise it is in the
    cell's log, whose path a failure shows.  ``gpu_policy`` is passed only to
    a ``run_cells`` that takes it.
    """
    from harness import pipeline

    kwargs: dict[str, Any] = {
        "echo": config.getoption("capture", "fd") == "no",
        "update": bool(config.getoption("harness_update", False)),
    }
    if "gpu_policy" in inspect.signature(pipeline.run_cells).parameters:
        kwargs["gpu_policy"] = config.getoption("harness_gpu", "skip")
    _state["used_rattler"] = True
    return pipeline.run_cells([cell], **kwargs)


def outcome_properties(outcome: TestOutcome) -> list[tuple[str, object]]:
    """What ``--junitxml`` records for a cell: counts, failing tests, where the evidence is."""
    props: list[tuple[str, object]] = [
        ("passed", outcome.passed),
        ("failed", outcome.failed),
        ("errors", outcome.errors),
        ("skipped", outcome.skipped),
    ]
    props += [("failure", name) for name in outcome.failures]
    if outcome.junit is not None:
        props.append(("junit", str(outcome.junit)))
    if outcome.log is not None:
        props.append(("log", str(outcome.log)))
    return props


def describe_failure(outcome: TestOutcome) -> str:
    """The failure text of a cell: the inner failing tests, why, and the log and JUnit paths."""
    failed = outcome.failed + outcome.errors
    lines = [
        f"cell {outcome.cell}: {failed} failed, {outcome.passed} passed, {outcome.skipped} skipped"
        f" (exit code {outcome.returncode} of: {' '.join(outcome.command)})"
    ]
    lines += [f"  FAILED {name}" for name in outcome.failures]
    if outcome.reason:
        lines += [f"  {line}" for line in outcome.reason.splitlines()]
    if outcome.log is not None:
        lines.append(f"  log:   {outcome.log}")
    if outcome.junit is not None:
        lines.append(f"  junit: {outcome.junit}")
    return "\n".join(lines)


# -- per-cell tests written by the project ---------------------------------------------------


def cells(source: str | os.PathLike[str]) -> list[ParameterSet]:
    """The cells of a matrix file or manifest as ``pytest.param`` values, with the cell ids as ids.

    For ``@pytest.mark.parametrize("harness_cell", cells(...), indirect=True)``.
    A relative ``source`` is looked up from the working directory, then from
    the calling module's directory and its parents, so ``cells("matrices/x.toml")``
    in ``tests/test_x.py`` finds the project's matrix wherever pytest starts.
    A file that does not compile fails the module's collection with the
    harness's message (file, key, hint).
    """
    from harness.loader import compile_path

    caller = inspect.currentframe()
    module = caller.f_back.f_globals.get("__file__") if caller and caller.f_back else None
    path = locate(Path(source), Path(module) if module else None)
    try:
        compiled = compile_path(path)
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    return [pytest.param(cell, id=cell.id) for cell in compiled.cells]


def locate(source: Path, module: Path | None) -> Path:
    """``source`` as given when absolute or found from here, else beside ``module`` or above it."""
    if source.is_absolute() or source.exists() or module is None:
        return source
    for directory in (module.parent, *module.parent.parents):
        if (directory / source).exists():
            return directory / source
    return source


@dataclass(frozen=True)
class _Prepared:
    """What preparing one cell gave in this process: the cell, or why a test cannot use it."""

    prepared: PreparedCell | None = None
    skip: str = ""
    error: str = ""


_prepared_key = pytest.StashKey[dict[tuple[Path, str], _Prepared]]()


@pytest.fixture
def harness_cell(request: pytest.FixtureRequest) -> PreparedCell:
    """The parametrized cell, solved, installed and built: a :class:`~harness.stages.PreparedCell`.

    ``.env`` is the activated test environment (with the harness's GPU
    variables), for ``subprocess.run([...], env=dict(prepared.env))``.  The
    test is skipped when the pipeline would skip the cell, and fails with the
    harness's message when preparing it fails.  Each cell is prepared once per
    process; the stages' own caches make later processes cheap too.
    """
    cell = getattr(request, "param", None)
    if not isinstance(cell, Cell):
        pytest.fail(
            "harness_cell needs a cell: parametrize it with "
            '@pytest.mark.parametrize("harness_cell", harness.pytest_plugin.cells("matrices/x.toml"), '
            "indirect=True)",
            pytrace=False,
        )
    memo = request.config.stash.setdefault(_prepared_key, {})
    from harness.cache import Cache

    key = (Cache.for_manifest(cell.manifest).root, cell.id)
    if key not in memo:
        memo[key] = prepare_cell(cell, request.config)
    got = memo[key]
    if got.skip:
        pytest.skip(f"{cell.id}: {got.skip}")
    if got.error or got.prepared is None:
        pytest.fail(got.error or f"cell {cell.id} could not be prepared", pytrace=False)
    return got.prepared


def prepare_cell(cell: Cell, config: pytest.Config) -> _Prepared:
    """Gate, then prepare ``cell`` as :func:`harness.pipeline.run_cells` does before its tests."""
    from harness.cache import Cache
    from harness.pipeline import register_offline, skip_reason, uses_offline_channel
    from harness.report import RunReport
    from harness.stages import prepare

    policy = config.getoption("harness_gpu", "skip")
    try:
        gpu = gpu_gate(cell, policy)
        if gpu is not None and gpu[0] == "skip":
            return _Prepared(skip=gpu[1])
        if gpu is not None and gpu[0] == "fail":
            return _Prepared(error=f"cell {cell.id}: {gpu[1]}")
        cache = Cache.for_manifest(cell.manifest)
        cache.ensure()
        _state["used_rattler"] = True
        if uses_offline_channel([cell]):
            register_offline(cache)
        reason = skip_reason(cell, cache)
        if reason is not None:
            return _Prepared(skip=reason)
        prepared = prepare(
            cell, cache=cache, update=bool(config.getoption("harness_update", False)),
            report=RunReport(),
        )
    except HarnessError as exc:
        return _Prepared(error=str(exc))
    if not prepared.installed:
        return _Prepared(skip=f"{cell.platform} cannot run on this machine")
    extra = gpu_variables(cell)
    if extra:
        prepared = replace(prepared, env=FrozenDict({**prepared.env, **extra}))
    return _Prepared(prepared=prepared)


def gpu_gate(cell: Cell, policy: str) -> tuple[str, str] | None:
    """``(action, reason)`` of the runner's GPU gate for ``cell``; ``None`` when no gate exists."""
    try:
        from harness import gpu
    except ImportError:
        return None
    gate, detect = getattr(gpu, "gate", None), getattr(gpu, "detect_runner", None)
    if gate is None or detect is None:
        return None
    decision = gate(cell, detect(), policy)
    return decision.action, decision.reason


def gpu_variables(cell: Cell) -> dict[str, str]:
    """``HARNESS_GPU``, ``HARNESS_GPU_AVAILABLE``... as a cell's test command sees them, if known."""
    try:
        from harness import gpu
    except ImportError:
        return {}
    env, detect = getattr(gpu, "gpu_env", None), getattr(gpu, "detect_runner", None)
    if env is None or detect is None:
        return {}
    return dict(env(cell, detect()))

