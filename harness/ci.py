"""``harness ci github``: the cells of matrix files as a GitHub Actions job matrix.

The export is the ``include`` list that a workflow feeds to
``strategy.matrix: ${{ fromJson(needs.plan.outputs.matrix) }}``, one object per
cell, so a CI run has one job per cell and the list can never drift from the
matrix files: the same compiler that ``harness list`` uses writes it.

Each object carries:

``id``
    the cell id (also the job name).
``runs-on``
    runner labels, as the compiler chose them from the matrix file's
    ``runners`` table (``cell.runners``): a cell that *needs* a GPU
    (``gpu = "required"`` and a declared CUDA) gets ``runners.gpu``; every
    other cell, ``gpu = "optional"`` ones included, which run on any machine,
    gets ``runners.default``, so GPU runners are not spent on cells that do not
    need them.  Without a ``runners`` table the labels are ``["ubuntu-latest"]``.
``python``
    the cell's python variant as a plain version (``"3.12"`` for the variant
    value ``3.12.*``, so it can feed ``actions/setup-python``), or ``null``.
``cuda``
    the CUDA version the cell declares (``system-requirements``), or ``null``.
``profile``, ``gpu``
    the cell's build profile and GPU need (``required`` | ``optional`` | ``none``).
``matrix``
    the file the cell is compiled from (its matrix file, or its manifest for
    cells without one), relative to the current directory when it lies below it.
``command``
    the shell command that runs this one cell:
    ``<prefix> test --from <matrix> <id>``.  The prefix defaults to ``harness``
    (the installed command); ``--command-prefix "./dev harness"`` suits a
    checkout that bootstraps its own environment.  A workflow appends
    ``--gpu require`` for cells whose ``gpu`` is ``required``, so that a GPU
    runner without a suitable driver fails the job instead of skipping it.

The order is the compiler's: sources in the order given (``matrices/*.toml``
sorted by name by default), cells in each file's order, so two exports of the
same files are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cell import Cell
from harness.cli import COMMANDS, EXTRA_COMMANDS

FALLBACK_RUNNERS: tuple[str, ...] = ("ubuntu-latest",)
DEFAULT_PREFIX = "harness"
GPU_ONLY = "gpu"
CPU_ONLY = "cpu"


@dataclass(frozen=True)
class CiEntry:
    """One cell as one CI job."""

    id: str
    runs_on: tuple[str, ...]
    python: str | None
    cuda: str | None
    profile: str
    gpu: str
    matrix: str
    command: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runs-on": list(self.runs_on),
            "python": self.python,
            "cuda": self.cuda,
            "profile": self.profile,
            "gpu": self.gpu,
            "matrix": self.matrix,
            "command": self.command,
        }


def needs_gpu(cell: Cell) -> bool:
    """Whether ``cell`` needs a GPU runner: ``gpu = "required"`` with a declared CUDA version.

    The same rule routes a cell to ``runners.gpu`` in the compiler and gates it
    on the runner's driver; ``optional`` cells run anywhere.
    """
    return cell.gpu == "required" and bool(cell.cuda)


def runner_labels(cell: Cell) -> tuple[str, ...]:
    """The labels of the runner that should run ``cell`` (``ubuntu-latest`` when none are set)."""
    return cell.runners or FALLBACK_RUNNERS


def plain_version(value: str | None) -> str | None:
    """``3.12.*`` -> ``3.12``: a variant pin as the version a CI setup step understands."""
    if value is None:
        return None
    text = value.strip()
    while text.endswith(".*"):
        text = text[:-2]
    return text or None


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX spelling) when it lies below it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def cell_command(prefix: str, source: str, cell_id: str) -> str:
    """The shell command that runs one cell; ``prefix`` is used verbatim (it may be several words)."""
    return f"{prefix} test " + shlex.join(["--from", source, cell_id])


def github_entries(
    cells: Iterable[Cell],
    *,
    root: Path,
    command_prefix: str = DEFAULT_PREFIX,
    only: str | None = None,
) -> list[CiEntry]:
    """The CI entries of ``cells``, in their order; ``only`` is ``"gpu"``, ``"cpu"`` or ``None``."""
    entries: list[CiEntry] = []
    seen: set[str] = set()
    for cell in cells:
        if cell.id in seen:
            continue
        if only == GPU_ONLY and not needs_gpu(cell):
            continue
        if only == CPU_ONLY and needs_gpu(cell):
            continue
        seen.add(cell.id)
        source = display_path(cell.matrix or cell.manifest, root)
        entries.append(
            CiEntry(
                id=cell.id,
                runs_on=runner_labels(cell),
                python=plain_version(cell.variant.get("python")),
                cuda=cell.cuda,
                profile=cell.profile,
                gpu=cell.gpu,
                matrix=source,
                command=cell_command(command_prefix, source, cell.id),
            )
        )
    return entries


def github_matrix(entries: Sequence[CiEntry]) -> dict[str, list[dict[str, Any]]]:
    """The value of ``strategy.matrix``: ``{"include": [...]}``."""
    return {"include": [e.to_json() for e in entries]}


def dump(matrix: Mapping[str, Any], *, pretty: bool = False) -> str:
    """Compact JSON on one line by default: ``$GITHUB_OUTPUT`` takes ``name=value`` lines."""
    if pretty:
        return json.dumps(matrix, indent=2)
    return json.dumps(matrix, separators=(",", ":"))


def cmd_ci(args: argparse.Namespace) -> int:
    if args.ci_target != "github":
        print("usage: harness ci github [MATRIX_OR_MANIFEST...]", file=sys.stderr)
        return 2
    from harness.loader import compile_sources

    compiled = compile_sources([Path(p) for p in args.sources] or None)
    for warning in compiled.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    only = GPU_ONLY if args.gpu_only else CPU_ONLY if args.cpu_only else None
    entries = github_entries(
        compiled.cells, root=Path.cwd(), command_prefix=args.command_prefix, only=only
    )
    print(dump(github_matrix(entries), pretty=args.pretty))
    return 0


def _register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ci", help="export the cells as a CI job matrix (`harness ci github`)")
    targets = p.add_subparsers(dest="ci_target", metavar="TARGET", required=True)
    g = targets.add_parser(
        "github",
        help="a GitHub Actions matrix: {\"include\": [...]}, one job per cell",
        description="Print the cells as JSON for `strategy.matrix: ${{ fromJson(...) }}`: "
        "id, runs-on, python, cuda, profile, gpu, matrix and the command that runs the cell. "
        "Cells that need a GPU (gpu = \"required\") get the matrix file's runners.gpu labels, "
        "the others runners.default (ubuntu-latest without a runners table).",
    )
    g.add_argument("sources", nargs="*", help="matrix files or manifests (default: matrices/*.toml)")
    only = g.add_mutually_exclusive_group()
    only.add_argument("--gpu-only", action="store_true", help="only the cells that need a GPU")
    only.add_argument("--cpu-only", action="store_true", help="only the cells that need no GPU")
    g.add_argument(
        "--command-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
        help="what runs the harness in each job's command (default: %(default)s; "
        "e.g. \"./dev harness\" or \"python -m harness\")",
    )
    g.add_argument("--pretty", action="store_true", help="indented JSON (the default is one line)")


EXTRA_COMMANDS.append(_register)
COMMANDS["ci"] = cmd_ci
