"""nox sessions for the cells of matrix files: ``nox -s "test(py312-cu13)" -- -k foo``.

A project's noxfile registers them in two lines::

    import harness.nox
    harness.nox.register_matrix_sessions()

Each command (``test``, ``build``, ``solve``) becomes one nox session,
parametrized over every cell, so ``nox -s test`` runs all cells, ``nox -s
"test(py312-cu13)"`` runs one and ``nox -t gpu`` / ``nox -t py312`` select by
tag.  The sessions use ``venv_backend="none"``: the harness installs its own
isolated prefixes, so a nox virtualenv would only cost time.  They are not
default sessions, so a bare ``nox`` still runs only the project's own ones.

Registering happens while nox imports the noxfile, so it must neither be slow
nor fail: compiling is pure (no solving, no network), and a matrix file that
does not compile is reported on stderr and contributes no sessions, while the
rest of the noxfile (and ``nox -l``) keeps working.

This module is ``harness.nox``; ``import nox`` below is an absolute import and
reaches the nox package, not this module.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nox

from harness.errors import HarnessError, MatrixError

if TYPE_CHECKING:
    from harness.cell import Cell

COMMANDS = ("test", "build", "solve")

# What each command does to a cell, as the sentence that opens its description.
ACTIONS = {
    "test": "build, install and test",
    "build": "build and install",
    "solve": "solve and install the prefixes of",
    "plan": "show what each stage would do for",
}

_PINNED_MINOR = re.compile(r"^\s*(?:==\s*)?(\d+)\.(\d+)(?:\.\*|\.\d+[^\s,|]*)?\s*$")


@dataclass(frozen=True)
class SourcedCell:
    """A cell and the file it was compiled from: the ``--from`` of its inner command."""

    cell: Cell
    source: Path


@dataclass(frozen=True)
class Collected:
    """The cells to register, and the errors of the files that give none."""

    cells: tuple[SourcedCell, ...]
    errors: tuple[HarnessError, ...]
    skipped: tuple[Path, ...]  # files whose cells are left out, one per error


def _expand(path: Path) -> list[Path]:
    """A directory means its ``matrices/*.toml`` (or its manifest), file by file,
    so one broken file does not hide the others."""
    from harness.loader import default_sources

    return default_sources(path) if path.is_dir() else [path]


def collect_cells(sources: Sequence[Path]) -> Collected:
    """Compile each source on its own; a file that fails, or that repeats a cell
    id of an earlier file, is left out whole and its error kept.

    Two files defining the same id would make ``test(ID)`` ambiguous; keeping
    the first silently would run a cell the user did not mean, so the second
    file is reported instead.
    """
    cells: list[SourcedCell] = []
    errors: list[HarnessError] = []
    skipped: list[Path] = []
    owner: dict[str, Path] = {}
    files: list[Path] = []
    for raw in sources:
        try:
            files += [p for p in _expand(raw) if p.resolve() not in {f.resolve() for f in files}]
        except HarnessError as exc:
            errors.append(exc)
            skipped.append(raw)
    from harness.loader import compile_path

    for path in files:
        try:
            compiled = compile_path(path)
        except HarnessError as exc:
            errors.append(exc)
            skipped.append(path)
            continue
        mine = [SourcedCell(c, c.matrix or c.manifest) for c in compiled.cells]
        clash = next((sc for sc in mine if sc.cell.id in owner), None)
        if clash is not None:
            first = owner[clash.cell.id]
            errors.append(MatrixError(
                f"cell '{clash.cell.id}' is defined by both {first} and {clash.source}",
                file=clash.source, key="name",
                hint=f"give the cells of one file other names; the cells of {clash.source} "
                     "get no nox sessions until then",
            ))
            skipped.append(path)
            continue
        for sc in mine:
            owner[sc.cell.id] = sc.source
        cells += mine
    return Collected(tuple(cells), tuple(errors), tuple(skipped))


def python_label(cell: Cell) -> str | None:
    """``py312`` from the cell's python variant (or its python dependency) when
    that pins one minor version; ``None`` otherwise."""
    specs = [cell.variant.get("python", "")] + [d.version for d in cell.dependencies if d.name == "python"]
    for spec in specs:
        m = _PINNED_MINOR.match(spec or "")
        if m:
            return f"py{m.group(1)}{m.group(2)}"
    return None


def cuda_label(cell: Cell) -> str | None:
    """``cu13`` (``cu128`` for 12.8) from the cell's declared CUDA requirement."""
    if not cell.cuda:
        return None
    return "cu" + "".join(cell.cuda.split(".")[:2])


def cell_tags(cell: Cell) -> list[str]:
    """The nox tags of a cell: its own tags (which carry its id's parts, e.g.
    ``py312`` and ``cu13``), ``pyXY``/``cuN`` when missing, its profile, and
    its runner class.

    The runner class follows ``cell.gpu``: ``gpu`` only for cells that need a
    GPU, ``gpu-optional`` plus ``cpu`` for cells that use one when present, and
    ``cpu`` otherwise; so ``nox -t gpu`` picks the work of a GPU runner and
    ``nox -t cpu`` all a CPU runner can do.
    """
    tags = [t for t in cell.tags if t not in ("gpu", "cpu", "gpu-optional")]
    tags += [t for t in (python_label(cell), cuda_label(cell)) if t]
    tags.append(cell.profile)
    tags += {"required": ["gpu"], "optional": ["gpu-optional", "cpu"]}.get(cell.gpu, ["cpu"])
    return list(dict.fromkeys(tags))


def describe_cell(cell: Cell) -> str:
    """One line: ``py312-cu13 (python 3.12.*, cuda-version 13.*; profile dev; needs a GPU)``."""
    variant = sorted(cell.variant.items(), key=lambda kv: (kv[0] != "python", kv[0]))
    parts = [", ".join(f"{k} {v}" for k, v in variant)] if variant else []
    parts.append(f"profile {cell.profile}")
    if cell.gpu == "required":
        parts.append("needs a GPU" + (f" (CUDA {cell.cuda})" if cell.cuda else ""))
    elif cell.gpu == "optional":
        parts.append("uses a GPU when present")
    return f"{cell.id} ({'; '.join(parts)})"


def inner_command(
    command: str, matrix: str | Path, cell: str, posargs: Sequence[str] = (), *, python: str | None = None
) -> list[str]:
    """The harness command line a session runs.  Extra arguments go to the
    cell's test command, after ``--``; other commands take none."""
    argv = [*harness_argv(python), command, "--from", str(matrix), cell]
    if command == "test" and posargs:
        argv += ["--", *posargs]
    return argv


def harness_argv(python: str | None = None) -> list[str]:
    """How a session starts the harness: the ``harness`` script installed beside this
    interpreter, else ``python -m harness`` (whose ``runpy`` costs a warm run 4 ms)."""
    if python is None:
        script = Path(sys.executable).parent / "harness"
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    return [python or sys.executable, "-m", "harness"]


def _docstring(command: str, cells: Sequence[SourcedCell], root: Path) -> str:
    """First line (what ``nox -l`` shows): the action and the files; then one
    line per cell (what ``nox --usage test`` shows).  nox gives every
    parametrization of a session the same description, so per-cell details
    live in the tags, the full description and ``harness show CELL``."""
    files = list(dict.fromkeys(_shown(sc.source, root) for sc in cells))
    where = ", ".join(files) if len(files) <= 3 else f"{len(files)} matrix files"
    lines = [f"{ACTIONS[command]} one cell of {where} (harness show CELL explains one)", ""]
    if command == "test":
        lines += ['Arguments after -- go to the test command: nox -s "test(CELL)" -- -k name', ""]
    lines += ["Cells:", *(f"  {describe_cell(sc.cell)}" for sc in cells)]
    return "\n".join(lines)


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _session_body(command: str, sources: dict[str, Path], python: str | None) -> Callable[..., None]:
    def body(session: nox.Session, cell: str) -> None:
        posargs = list(session.posargs)
        if posargs and command != "test":
            session.warn(f"{command} takes no extra arguments; ignoring {' '.join(posargs)}")
        argv = inner_command(command, sources[cell], cell, posargs, python=python)
        if command == "test" and python is None and _warm_in_process(session, argv):
            return
        session.run(*argv, external=True)

    body.__name__ = body.__qualname__ = command
    return body


def _warm_in_process(session: nox.Session, argv: Sequence[str]) -> bool:
    """Run ``harness test`` warm in nox's own process, when its snapshot allows (``True``).

    A second interpreter would cost more than the whole warm start; the full
    path, which imports the solver and its threads, always runs in a process
    of its own.  The environment is the one ``session.run`` would give the
    command (nox's variables, such as ``NOX_CURRENT_SESSION``, included), and
    a failure reads as ``session.run``'s: the command, its exit code, a failed session.
    """
    from nox.command import CommandFailed
    from nox.logger import logger

    from harness.errors import HarnessError
    from harness.launch import scoped_environ
    from harness.warmstart import try_warm

    args = list(argv[argv.index("test"):])
    try:
        with scoped_environ(session.env):  # None unsets, as session.run reads it
            code = try_warm(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    finally:
        sys.stdout.flush()
    if code is None:
        return False
    if code != 0:
        logger.error(f"Command {' '.join(argv)} failed with exit code {code}")
        raise CommandFailed(f"Returned code {code}")
    return True


def register_matrix_sessions(
    *sources: str | Path,
    root: Path | None = None,
    commands: Iterable[str] = COMMANDS,
    python: str | None = None,
) -> list[str]:
    """Register one nox session per command, parametrized over every cell of
    ``sources`` (default: ``matrices/*.toml`` beside the noxfile, else its
    pixi manifest); returns the session names, ``test(py312-cu13)`` and so on.

    ``root`` resolves relative sources (default: the working directory, which
    nox sets to the noxfile's directory).  ``python`` runs ``-m harness``
    (default: the interpreter running nox, where the harness is installed).

    Only the first command's sessions carry the cell tags: nox's ``-t`` selects
    across all sessions (and overrides ``-s``), so tagging every command would
    make ``nox -t gpu`` solve, build and test each GPU cell three times over.
    ``nox -k "build and py312"`` selects the other commands by name.
    """
    commands = tuple(commands)
    unknown = [c for c in commands if c not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown harness command(s) {unknown}; choose from {sorted(ACTIONS)}")
    root = Path(root) if root is not None else Path.cwd()
    paths = [p if p.is_absolute() else root / p for p in map(Path, sources)] or [root]
    listing = session_listing(paths, commands, root)
    if not listing["cells"]:
        return []
    ids = [c["id"] for c in listing["cells"]]
    by_id = {c["id"]: Path(c["source"]) for c in listing["cells"]}
    names: list[str] = []
    for i, command in enumerate(commands):
        params = [
            nox.param(c["id"], id=c["id"], tags=c["tags"] if i == 0 else [])
            for c in listing["cells"]
        ]
        body = _session_body(command, by_id, python)
        body.__doc__ = listing["docs"][command]
        parametrized = nox.parametrize("cell", params, ids=ids)(body)
        nox.session(name=command, venv_backend="none", default=False)(parametrized)
        names += [f"{command}({cid})" for cid in ids]
    return names


def session_listing(paths: Sequence[Path], commands: Sequence[str], root: Path) -> dict[str, Any]:
    """What the sessions need (ids, sources, tags, descriptions), compiled or reused.

    nox imports the noxfile for every ``nox`` command, so this runs before
    every session: when no file the compile read has changed since the last
    time (:func:`harness.warm.load_cached`), the listing is reused without
    importing the compiler at all.  Files that fail to compile are reported
    every time and never cached.
    """
    import time

    from harness import inputs, warm

    material = {"paths": [str(p.absolute()) for p in paths], "commands": list(commands), "root": str(root)}
    cached = warm.load_cached("nox", material)
    if isinstance(cached, dict):
        return cached
    taken = time.time_ns()
    inputs.forget()
    collected = collect_cells(paths)
    for error, skipped in zip(collected.errors, collected.skipped, strict=True):
        print(f"harness: {error}", file=sys.stderr)
        print(f"harness: no nox sessions for {_shown(skipped, root)}", file=sys.stderr)
    listing = {
        "cells": [
            {"id": sc.cell.id, "source": str(sc.source), "tags": cell_tags(sc.cell)}
            for sc in collected.cells
        ],
        "docs": {command: _docstring(command, collected.cells, root) for command in commands},
    }
    if not collected.errors:
        warm.store_cached("nox", material, listing, inputs.noted(), taken)
    return listing
