"""What every build backend gets and gives back, and how it runs commands.

A backend turns a source tree into the files of one package, for one cell's
variant.  It receives a :class:`BuildContext` whose directories all belong to
that variant key alone (DESIGN invariant 1) and must never write into
``source_dir`` (invariant 3): each build system's output is redirected into
``build_dir``.  It returns a :class:`BuildOutput`: either files staged under
``install_dir`` (laid out relative to a prefix), which the harness packages
as a ``.conda``, or a ready ``.conda`` (the rattler-build backend).

Commands run through :meth:`BuildContext.run`, which logs them and turns a
failure into a :class:`~harness.errors.BuildError` that names the command and
shows the log's tail, so no backend writes its own error handling.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.errors import BuildError
from harness.frozen import FrozenDict

#: Lines of the build log shown when a command fails.
TAIL_LINES = 30


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class BuildContext:
    """One build of one package for one variant.  Paths are absolute.

    ``env`` is the complete environment commands run with: a clean base, the
    build and host prefixes on ``PATH``, ``PREFIX`` (host prefix),
    ``BUILD_PREFIX``, ``SRC_DIR``, ``BUILD_DIR``, ``INSTALL_PREFIX`` (=
    ``install_dir``), ``PYTHON`` (when the host prefix has one), ``CPU_COUNT``,
    plus the configuration's ``env`` table, already expanded.
    """

    cell_id: str
    package: str
    version: str
    source_dir: Path  # read only: nothing may be written here
    build_dir: Path  # persistent per variant key: incremental state lives here
    install_dir: Path  # empty at start; files go here laid out as in a prefix
    host_prefix: Path | None
    build_prefix: Path | None
    platform: str  # conda subdir the package is built for
    profile: str
    profile_base: str  # "dev" or "release"
    variant: FrozenDict[str, str]
    config: FrozenDict[str, Any]  # merged backend configuration, values expanded
    env: FrozenDict[str, str]
    python: Path | None  # the host prefix's interpreter, if it has one
    cpu_count: int
    log_path: Path
    channels: tuple[str, ...] = ()  # channel URLs (the rattler-build backend solves itself)
    manifest: Path | None = None
    #: The cell's declared virtual packages (``__cuda=13``...): what a backend that
    #: solves for itself must solve with, never the runner's.
    virtual_packages: tuple[str, ...] = ()

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> None:
        """Run ``argv`` with output appended to the build log; raise :class:`BuildError` on failure.

        ``env`` entries are added to (and override) :attr:`env`.  ``what``
        names the step in the error ("configure", "build wheel"...).
        """
        args = [os.fspath(a) for a in argv]
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        command = shlex.join(args)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {command}\n  (cwd: {cwd or self.build_dir})\n")
            log.flush()
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    args,
                    cwd=cwd or self.build_dir,
                    env=full_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except OSError as exc:
                log.write(f"[harness] could not start: {exc}\n")
                raise BuildError(
                    f"cell {self.cell_id!r}: {what or 'build'} could not start `{command}`: {exc}",
                    file=self.manifest,
                    key="package.build",
                    hint=f"is {args[0]!r} installed (in the build prefix or on PATH)?  "
                    f"log: {self.log_path}",
                ) from None
            log.write(f"[harness] exit {proc.returncode} after {time.monotonic() - started:.1f}s\n")
        if proc.returncode != 0:
            raise self.failure(
                f"{what or 'build'} failed: `{command}` exited with {proc.returncode}"
            )

    def failure(self, message: str, *, key: str = "package.build") -> BuildError:
        """A :class:`BuildError` for this build with the log's tail attached."""
        tail = log_tail(self.log_path)
        text = f"cell {self.cell_id!r}: {message}"
        if tail:
            text += "\n  last lines of the build log:\n" + "\n".join(
                f"    {line}" for line in tail.splitlines()
            )
        return BuildError(text, file=self.manifest, key=key, hint=f"full log: {self.log_path}")

    def log(self, message: str) -> None:
        """Append a line of the harness's own to the build log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"[harness] {message}\n")


@dataclass(frozen=True)
class BuildOutput:
    """What a backend produced.

    Either ``package`` is a finished ``.conda``/``.tar.bz2`` archive, or the
    files were staged under :attr:`BuildContext.install_dir` and the harness
    packages them with ``noarch`` and the extra ``depends`` given here (for
    example ``python_abi 3.12.* *_cp312`` for a compiled extension).
    """

    package: Path | None = None
    noarch: str | None = None  # None | "python" | "generic"
    depends: tuple[str, ...] = ()
    entry_points: tuple[str, ...] = ()  # "name = module:func" for noarch: python packages
    #: Top-level modules a clean test prefix must be able to import (release import check).
    imports: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)


class Backend(Protocol):
    """A build backend, registered under the name pixi uses for it."""

    name: str
    #: The implementation's version: part of every variant key it builds.
    version: str
    #: True when ``$PREFIX`` is where the build installs (the script backend, as in
    #: conda-build); otherwise ``$PREFIX`` is the host prefix and files go to
    #: ``$INSTALL_PREFIX``.
    installs_into_prefix: bool

    def check_config(self, config: Mapping[str, Any], manifest: Path | None) -> None:
        """Raise :class:`BuildError` naming the key for configuration it cannot use."""

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Build ``ctx.source_dir`` for ``ctx``'s variant; see the module docstring."""
