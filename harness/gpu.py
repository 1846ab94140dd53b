"""The runner's GPU: what driver this machine has, and which cells may run on it.

Solving uses a cell's *declared* virtual packages, so a lock for a CUDA 13
cell can be made anywhere; running uses the *runner's* (DESIGN).  A cell that
requires a CUDA driver the runner lacks would only fail in ways that say
nothing about the package (``cudaErrorInsufficientDriver`` deep in a test),
so :func:`gate` decides, before anything is solved, whether each cell runs,
is skipped with a reason, or fails (``--gpu require``, for GPU runners in CI
where a missing driver is a broken runner, not a reason to pass quietly).

Detection goes through py-rattler with ``VirtualPackageOverrides.from_env()``
so that ``CONDA_OVERRIDE_CUDA`` lets a CPU machine pretend to have a driver
(or a GPU machine pretend to have none), exactly as conda and pixi allow.
py-rattler accepts any text there (``abc`` becomes ``__cuda=abc``), so the
value is checked here first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from harness.cell import Cell
from harness.errors import HarnessError

OVERRIDE_VAR = "CONDA_OVERRIDE_CUDA"
POLICIES = ("skip", "require", "ignore")
DEFAULT_POLICY = "skip"
RUN = "run"
SKIP = "skip"
FAIL = "fail"

_CUDA_VERSION = re.compile(r"^\d+(?:\.\d+){0,2}$")
_XDIST_WORKER = re.compile(r"^gw(\d+)$")
_NVIDIA_SMI_TIMEOUT = 10.0

_cache: dict[tuple[str | None, str], Runner] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Runner:
    """This machine as the solver and the tests see it.

    ``virtual_packages`` are rattler's generic spellings (``__cuda=12.4=0``);
    ``cuda`` is the driver's CUDA version (``None``: no driver); ``gpus`` are
    the lines of ``nvidia-smi -L``, in device order; ``source`` says where the
    CUDA version came from, so a report can tell an override from a driver.
    """

    platform: str
    virtual_packages: tuple[str, ...]
    cuda: str | None
    gpus: tuple[str, ...]
    source: str

    def describe_cuda(self) -> str:
        """``CUDA 12.4`` or ``none``, followed by the override that set it, if any."""
        text = f"CUDA {self.cuda}" if self.cuda else "none"
        return text if self.source == "detected" else f"{text} ({self.source})"


@dataclass(frozen=True)
class Gate:
    """What to do with one cell on this runner: ``run``, ``skip`` or ``fail``, and why."""

    action: str
    reason: str = ""


def check_override(value: str | None) -> str | None:
    """The validated ``CONDA_OVERRIDE_CUDA`` value (``""`` means no CUDA), or ``None`` when unset."""
    if value is None:
        return None
    text = value.strip()
    if text and not _CUDA_VERSION.match(text):
        raise HarnessError(
            f"{value!r} is not a CUDA version",
            key=OVERRIDE_VAR,
            hint=f"set {OVERRIDE_VAR} to a driver's CUDA version such as 12, 12.4 or 13.0, "
            "to an empty value for a runner without CUDA, or unset it to detect the driver",
        )
    return text


def detect_runner(environ: Mapping[str, str] | None = None) -> Runner:
    """This machine's platform, virtual packages, CUDA driver and GPUs (cached per process).

    ``environ`` (default: the process environment) supplies ``CONDA_OVERRIDE_CUDA``
    and the ``PATH`` searched for ``nvidia-smi``; the cache is keyed by both, so
    a changed override is seen at once while repeated calls cost nothing.
    """
    env = os.environ if environ is None else environ
    override = check_override(env.get(OVERRIDE_VAR))
    key = (override, env.get("PATH", ""))
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    runner = _detect(override, env.get("PATH"))
    with _cache_lock:
        _cache[key] = runner
    return runner


def _detect(override: str | None, path: str | None) -> Runner:
    from rattler import Override, Subdir, VirtualPackage, VirtualPackageOverrides

    overrides = VirtualPackageOverrides.from_env()
    # from_env() reads the process environment; an explicit mapping decides CUDA here.
    overrides.cuda = Override.string(override) if override is not None else None
    generic = [v.into_generic() for v in VirtualPackage.detect(overrides)]
    cuda = next((str(v.version) for v in generic if v.name.normalized == "__cuda"), None)
    if override is None:
        source = "detected"
    else:
        source = f"{OVERRIDE_VAR}={override}" if override else f"{OVERRIDE_VAR} is empty"
    return Runner(
        platform=str(Subdir.current()),
        virtual_packages=tuple(str(v) for v in generic),
        cuda=cuda or None,
        gpus=list_gpus(path),
        source=source,
    )


def list_gpus(path: str | None = None) -> tuple[str, ...]:
    """The GPUs ``nvidia-smi -L`` lists (``GPU 0: NVIDIA L4 (UUID: ...)``); none if it fails."""
    exe = shutil.which("nvidia-smi", path=path)
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    if out.returncode != 0:
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip().startswith("GPU "))


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise HarnessError(
            f"unknown GPU policy {policy!r}",
            key="gpu",
            hint="use skip (cells needing a driver this runner lacks are skipped), "
            "require (they fail) or ignore (they run anyway)",
        )
    return policy


def needs_driver(cell: Cell) -> bool:
    """A cell needs a CUDA driver when it requires a GPU and declares a CUDA version."""
    return cell.gpu == "required" and declared_cuda(cell) is not None


def declared_cuda(cell: Cell) -> str | None:
    """The CUDA version the cell declares (``system-requirements.cuda``, else its ``__cuda``)."""
    if cell.cuda:
        return cell.cuda
    for vp in cell.virtual_packages:
        name, _, rest = vp.partition("=")
        if name == "__cuda" and rest:
            return rest.split("=", 1)[0]
    return None


def driver_satisfies(cell: Cell, runner: Runner) -> bool:
    """Whether the runner has a CUDA driver at least as new as the cell declares (any, if none)."""
    if runner.cuda is None:
        return False
    need = declared_cuda(cell)
    return need is None or _at_least(runner.cuda, need, cell)


def _at_least(have: str, need: str, cell: Cell) -> bool:
    from rattler import Version
    from rattler.exceptions import InvalidVersionError

    try:
        wanted = Version(need)
    except InvalidVersionError:
        raise HarnessError(
            f"cell {cell.id} declares CUDA {need!r}, which is not a version",
            file=cell.matrix or cell.manifest,
            key="system-requirements.cuda",
            hint='write the CUDA major (and minor) version, such as cuda = "13" or "12.4"',
        ) from None
    try:
        return Version(have) >= wanted
    except InvalidVersionError:
        return False


def gate(cell: Cell, runner: Runner, policy: str = DEFAULT_POLICY) -> Gate:
    """Whether ``cell`` runs on ``runner`` under ``policy``; pure, so it costs nothing."""
    check_policy(policy)
    if policy == "ignore" or not needs_driver(cell) or driver_satisfies(cell, runner):
        return Gate(RUN)
    reason = f"needs a CUDA {declared_cuda(cell)} driver, this runner has {runner.describe_cuda()}"
    if policy == "require":
        return Gate(FAIL, f"{reason} (the GPU policy 'require' fails such cells)")
    return Gate(SKIP, reason)


def worker_index(environ: Mapping[str, str] | None = None) -> int | None:
    """N of the pytest-xdist worker ``gwN`` this process is, or ``None``."""
    env = os.environ if environ is None else environ
    m = _XDIST_WORKER.match(env.get("PYTEST_XDIST_WORKER", ""))
    return int(m.group(1)) if m else None


def gpu_env(
    cell: Cell,
    runner: Runner,
    *,
    worker: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables a cell's test command sees about GPUs.

    ``HARNESS_GPU_AVAILABLE`` is ``1`` when the runner's driver is at least the
    CUDA version the cell declares (any driver when it declares none), so a
    test suite can skip its GPU tests on a CPU runner without probing CUDA.
    Parallel workers on a multi-GPU runner get one GPU each
    (``CUDA_VISIBLE_DEVICES``), chosen among those already visible when the
    caller restricted them.
    """
    env = os.environ if environ is None else environ
    out = {
        "HARNESS_GPU": cell.gpu,
        "HARNESS_GPU_AVAILABLE": "1" if driver_satisfies(cell, runner) else "0",
        "HARNESS_CUDA": declared_cuda(cell) or "",
        "HARNESS_RUNNER_CUDA": runner.cuda or "",
    }
    index = worker if worker is not None else worker_index(env)
    if index is None or len(runner.gpus) < 2:
        return out
    visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible or [str(i) for i in range(len(runner.gpus))]
    out["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    return out
