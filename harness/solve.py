"""Solving a cell's environments with py-rattler.

A cell needs up to three environments (*roles*): ``build`` and ``host`` for
building its package, ``test`` for running its tests.  Each is solved with the
cell's **declared** virtual packages (DESIGN: a lock for a GPU cell can be made
on a CPU machine), never the runner's: note that ``rattler.solve`` with no
virtual packages uses *none*, it does not detect them.

One :class:`rattler.Gateway` is shared by the whole process, so repodata is
parsed once for all cells; because it keeps repodata in memory, a local
channel whose repodata changed on disk is evicted from it before the next solve.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import os
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rattler import (
    BuildString,
    Channel,
    ChannelPriority,
    Gateway,
    GenericVirtualPackage,
    PackageName,
    RepoDataRecord,
    Version,
    solve,
)
from rattler.exceptions import InvalidMatchSpecError, SolverError

from harness.cell import Cell
from harness.channels import ResolvedChannel, repodata_fingerprint
from harness.errors import HarnessError, SolveError
from harness.specs import parse_cutoff

TEST_ROLE = "test"
TIMEOUT_ENV = "HARNESS_SOLVE_TIMEOUT"
DEFAULT_TIMEOUT = 120.0

T = TypeVar("T")


# -- what to solve ---------------------------------------------------------------


@dataclass(frozen=True)
class RoleRequest:
    """The specs of one role of one cell, exactly as they are handed to the solver."""

    role: str
    specs: tuple[str, ...]


def _spec_name(spec: str) -> str:
    return spec.split()[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].lower()


def _env_specs(cell: Cell) -> list[str]:
    """The environment's own specs: its dependencies, without the package it builds."""
    own = cell.package.name if cell.package else None
    return [d.matchspec() for d in cell.dependencies if not d.is_source and d.name != own]


def _merge_specs(*groups: list[str]) -> list[str]:
    """Specs of several groups, first spelling of each exact spec kept, order kept."""
    return list(dict.fromkeys(s for group in groups for s in group))


def role_requests(cell: Cell, artifact_spec: str | None = None) -> tuple[RoleRequest, ...]:
    """The roles ``cell`` needs, in solve order, each with its specs.

    A cell with a package needs ``build`` (its build deps, plus the variant pins
    that name one of them: a compiler pin must not drag the whole variant into
    the build tools), ``host`` and ``test`` (their deps plus every variant pin,
    which is how the variant assignment reaches the solve).  A cell without a
    package only tests.  A role with no dependencies of its own is skipped:
    pins alone do not make an environment worth installing.

    The test role depends on the profile.  ``dev`` is a development
    environment, as pixi's: the environment's dependencies plus the package's
    host and run dependencies, with the build installed beside them.
    ``release`` is a clean prefix solved from the environment's dependencies
    and the built package itself (``artifact_spec``), so only the package's
    recorded ``depends`` bring its run-time needs: a forgotten run-dependency
    fails the cell.  Without ``artifact_spec`` a release cell has no test role yet.
    """
    pins = cell.variant_pins()
    out: list[RoleRequest] = []
    host: list[str] = []
    if cell.package is not None:
        build = cell.specs("build")
        if build:
            names = {_spec_name(s) for s in build}
            out.append(RoleRequest("build", (*build, *(p for p in pins if _spec_name(p) in names))))
        host = cell.specs("host")
        if host:
            out.append(RoleRequest("host", (*host, *pins)))
    if cell.package is None:
        run = cell.specs("run")
    elif cell.profile_base == "release":
        if artifact_spec is None:
            return tuple(out)
        run = _merge_specs(_env_specs(cell), [artifact_spec])
    else:
        run = _merge_specs(cell.specs("run"), host)
    if run:
        out.append(RoleRequest(TEST_ROLE, (*run, *pins)))
    return tuple(out)


def parse_virtual_package(text: str) -> GenericVirtualPackage:
    """``__cuda=13`` / ``__archspec=1=x86_64`` as a :class:`GenericVirtualPackage` (build ``0`` by default)."""
    parts = text.strip().split("=")
    name = parts[0]
    version = parts[1] if len(parts) > 1 and parts[1] else "0"
    build = parts[2] if len(parts) > 2 and parts[2] else "0"
    if not name.startswith("__") or len(parts) > 3:
        raise HarnessError(
            f"{text!r} is not a virtual package (expected `__name=version[=build]`)",
            hint="virtual packages come from the manifest's system-requirements",
        )
    return GenericVirtualPackage(PackageName(name), Version(version), BuildString(build))


def solve_timeout() -> datetime.timedelta:
    """The solve time limit: ``$HARNESS_SOLVE_TIMEOUT`` seconds, else 120 s.

    Adversarial repodata can make the solver run for minutes; a timeout turns
    that into a :class:`SolveError` instead of a hung CI job.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise HarnessError(
            f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds",
            hint="unset it or use e.g. 300",
        )
    return datetime.timedelta(seconds=seconds)


# -- the shared gateway -------------------------------------------------------------

_gateway: Gateway | None = None
_gateway_lock = threading.Lock()
_seen_repodata: dict[tuple[int, str], str | None] = {}


def shared_gateway() -> Gateway:
    """The process's one :class:`Gateway` (repodata is parsed once for every cell)."""
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            _gateway = Gateway()
        return _gateway


def refresh_local_channels(
    gateway: Gateway, channels: Sequence[ResolvedChannel], subdirs: Sequence[str]
) -> None:
    """Evict local channels whose repodata changed on disk since this gateway last read them."""
    for channel in channels:
        if channel.local_path is None:
            continue
        fingerprint = repodata_fingerprint(channel, subdirs)
        key = (id(gateway), channel.url)
        if key in _seen_repodata and _seen_repodata[key] != fingerprint:
            gateway.clear_repodata_cache(Channel(channel.url))
        _seen_repodata[key] = fingerprint


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a rattler coroutine from synchronous code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- solving -------------------------------------------------------------------------


def channel_specs(specs: Sequence[str], channels: Sequence[ResolvedChannel]) -> list[str]:
    """Specs with their ``channel::`` prefix as written (``offline::numpy``) turned into the
    channel's URL, so a channel-pinned dependency comes from that channel and no other."""
    urls = {c.written.strip(): c.url for c in channels}
    out = []
    for spec in specs:
        head, sep, rest = spec.partition("::")
        if sep and head in urls:
            spec = f"{urls[head]}::{rest}"
        out.append(spec)
    return out




def describe_cell(cell: Cell, channels: Sequence[ResolvedChannel]) -> str:
    """The lines every solve failure starts with: what was asked, for which cell."""
    variant = ", ".join(f"{k}={v}" for k, v in sorted(cell.variant.items())) or "(none)"
    vps = ", ".join(cell.virtual_packages) or "(none)"
    chans = ", ".join(c.url for c in channels) or "(none)"
    return (
        f"  variant: {variant}\n"
        f"  virtual packages: {vps}\n"
        f"  platform: {cell.platform}\n"
        f"  channels: {chans}"
    )


def solve_role(
    cell: Cell,
    request: RoleRequest,
    channels: Sequence[ResolvedChannel],
    *,
    gateway: Gateway | None = None,
    timeout: datetime.timedelta | None = None,
) -> list[RepoDataRecord]:
    """Solve one role; an unsolvable request becomes a :class:`SolveError` naming the cell."""
    gateway = gateway or shared_gateway()
    subdirs = [cell.platform, "noarch"]
    refresh_local_channels(gateway, channels, subdirs)
    if cell.exclude_newer_packages:
        first = next(iter(cell.exclude_newer_packages))
        raise SolveError(
            f"cell {cell.id!r}: per-package cutoffs ({', '.join(cell.exclude_newer_packages)}) cannot "
            "be honoured: py-rattler's solver takes one exclude-newer for the whole solve",
            file=cell.manifest, key=first.split(".", 1)[0],
            hint="drop the per-package table (the workspace's exclude-newer still applies), or pin "
            "those packages' versions instead",
        )
    vps = [parse_virtual_package(v) for v in cell.virtual_packages]
    strategy = cell.solve_strategy or "highest"
    try:
        return run_sync(
            solve(
                [c.url for c in channels],
                channel_specs(request.specs, channels),
                gateway=gateway,
                platforms=subdirs,
                virtual_packages=vps,
                timeout=timeout or solve_timeout(),
                strategy=strategy,  # type: ignore[arg-type]
                channel_priority=(
                    ChannelPriority.Disabled if cell.channel_priority == "disabled" else ChannelPriority.Strict
                ),
                exclude_newer=parse_cutoff(cell.exclude_newer) if cell.exclude_newer else None,
            )
        )
    except InvalidMatchSpecError as exc:
        raise SolveError(
            f"cell {cell.id!r} ({request.role}): a dependency is not a valid MatchSpec: {exc}\n"
            f"  specs: {', '.join(request.specs)}",
            file=cell.manifest,
            hint="write versions as `==1.0`, `1.0.*` or `>=1,<2`",
        ) from None
    except SolverError as exc:
        raise SolveError(
            f"cell {cell.id!r} cannot be solved (environment {request.role!r})\n"
            f"{describe_cell(cell, channels)}\n"
            f"  specs: {', '.join(request.specs)}\n"
            f"{str(exc).strip()}",
            file=cell.manifest,
            hint="check the dependencies against the variant assignment and the declared "
            'virtual packages (system-requirements: `cuda = "12"` declares `__cuda=12`)',
        ) from None
    except Exception as exc:  # a channel that cannot be read, a bad strategy...
        raise SolveError(
            f"cell {cell.id!r} ({request.role}): the solver failed: {type(exc).__name__}: {exc}\n"
            f"{describe_cell(cell, channels)}",
            file=cell.manifest,
            hint="check that every channel is reachable and indexed (repodata.json)",
        ) from None
