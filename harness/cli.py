"""``harness``: the command line over the core API.

User errors print ``file:line: key: message`` plus a hint and exit 2; nothing a
user can type ends in a traceback.
"""

from __future__ import annotations

import os
import sys

# Nothing else at import time: a warm ``harness test`` (harness.warmstart)
# runs before this module would need anything heavier.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence


def _print_warnings(warnings: Sequence[str]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from harness.loader import compile_sources

    compiled = compile_sources([Path(p) for p in args.sources] or None)
    if not args.quiet:
        _print_warnings(compiled.warnings)
    if args.json:
        json.dump([c.to_json() for c in compiled.cells], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.ids:
        for c in compiled.cells:
            print(c.id)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("cell", "profile", "platform", "variant", "virtual packages", "gpu", "builds"):
        table.add_column(col)
    for c in compiled.cells:
        variant = " ".join(f"{k}={v}" for k, v in c.variant.items()) or "-"
        vps = " ".join(v for v in c.virtual_packages if not v.startswith(("__unix", "__archspec"))) or "-"
        builds = c.package.name if c.package is not None else "-"
        table.add_row(c.id, c.profile, c.platform_name or c.platform, variant, vps, c.gpu, builds)
    console = Console(width=max(100, _width()))
    console.print(table)
    # The last row ends its line before anything else (a warning on stderr) is written.
    sys.stdout.flush()
    return 0


def _width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def cmd_show(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from harness.loader import find_cells

    cells = find_cells([args.cell], [Path(p) for p in args.sources] or None)
    for cell in cells:
        if args.json:
            data = cell.to_json()
            data["provenance"] = dict(cell.provenance)
            print(json.dumps(data, indent=2))
            continue
        print(render_cell(cell))
    return 0


def render_cell(cell) -> str:  # type: ignore[no-untyped-def]
    """A human-readable account of a cell: each value and where it came from."""
    import json

    prov = cell.provenance
    lines = [f"cell {cell.id}"]

    def row(label: str, value: object, key: str | None = None) -> None:
        origin = prov.get(key) if key else None
        lines.append(f"  {label:<22} {value}" + (f"    <- {origin}" if origin else ""))

    row("manifest", cell.manifest)
    if cell.matrix:
        row("matrix", cell.matrix)
    row("environment", cell.environment)
    if cell.axes:
        row("axes", " ".join(f"{k}={v}" for k, v in cell.axes.items()))
    row("platform", f"{cell.platform_name} ({cell.platform})" if cell.platform_name != cell.platform else cell.platform)
    row("profile", f"{cell.profile} (behaves as {cell.profile_base})", "profile")
    row("pure variant key", cell.pure_key)
    lines.append("  variant")
    for k, v in cell.variant.items():
        row(f"  {k}", v, f"variant.{k}")
    lines.append("  dependencies")
    for d in cell.dependencies:
        row(f"  {d.name}", d.describe(), f"dependencies.{d.name}")
    row("virtual packages", " ".join(cell.virtual_packages))
    for k in ("cuda",):
        if f"system-requirements.{k}" in prov:
            row(f"  {k}", cell.cuda, f"system-requirements.{k}")
    row("channels", " ".join(cell.channels))
    if cell.activation_env:
        lines.append("  activation env")
        for k, v in cell.activation_env.items():
            row(f"  {k}", v, f"activation.env.{k}")
    row("test command", cell.test_command, "test_command")
    row("gpu", f"{cell.gpu}" + (f" (needs CUDA {cell.cuda})" if cell.cuda else ""))
    row("tags", " ".join(cell.tags))
    if cell.runners:
        row("runners", " ".join(cell.runners))
    if cell.package:
        p = cell.package
        lines.append(f"  package {p.name} {p.version} via {p.backend} {p.backend_version}")
        for role, deps in (("build", p.build_deps), ("host", p.host_deps), ("run", p.run_deps)):
            if deps:
                row(f"  {role}", ", ".join(d.describe() for d in deps))
        for k, v in p.config.items():
            row(f"  config.{k}", json.dumps(v if not hasattr(v, "items") else dict(v), default=list), f"config.{k}")
    return "\n".join(lines)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
}


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Compile pixi manifests and matrix files into cells; solve, build and test each one.",
    )
    from harness import __version__

    parser.add_argument("--version", action="version", version=f"variant-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list the cells of matrix files or manifests")
    p.add_argument("sources", nargs="*", help="matrix files or manifests (default: matrices/*.toml)")
    p.add_argument("--json", action="store_true", help="a JSON list of cells")
    p.add_argument("--ids", action="store_true", help="only the cell ids, one per line")
    p.add_argument("-q", "--quiet", action="store_true", help="no warnings")
    p = sub.add_parser("show", help="everything a cell resolved to, and where each value came from")
    p.add_argument("cell", help="a cell id")
    p.add_argument("sources", nargs="*", help="matrix files or manifests (default: matrices/*.toml)")
    p.add_argument("--json", action="store_true")
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Later stages (solve, build, test, ...) register their sub-commands here.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]


# Which module registers each sub-command (into EXTRA_COMMANDS / COMMANDS).
_MODULES = {
    "doctor": "harness.doctor",
    "ci": "harness.ci",
    "gc": "harness.gc",
    "premerge": "harness.premerge",
    **dict.fromkeys(("solve", "plan", "build", "test", "channel"), "harness.commands"),
}


def _load_extra_commands(command: str | None = None) -> None:
    """Import the module of ``command`` only (``harness list`` need not load the builder);
    every module for help or an unknown command, so that argparse lists them all."""
    import importlib

    if command in ("list", "show"):
        return
    for module in [_MODULES[command]] if command in _MODULES else dict.fromkeys(_MODULES.values()):
        importlib.import_module(module)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``harness test CELL -- -k foo``: the harness's arguments, and those for the test command."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def run(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] == ["test"]:  # an unchanged cell re-runs without compiling anything
        from harness.warmstart import try_warm

        try:
            code = try_warm(args_in)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            from harness.errors import HarnessError

            if not isinstance(exc, HarnessError):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        if code is not None:
            return code
    from harness.errors import HarnessError

    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    _load_extra_commands(own[0] if own and not own[0].startswith("-") else None)
    parser = build_parser()
    if own[:2] == ["channel", "offline"]:  # its own parser, with its own --help
        return _channel(own[2:] + (["--", *extra] if extra else []))
    args = parser.parse_args(own)
    args.extra = extra
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _channel(argv: list[str]) -> int:
    from harness.channel import channel_main
    from harness.errors import HarnessError

    try:
        return channel_main(argv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point.  Exits with ``os._exit`` after flushing: rattler's
    background threads can crash a normal interpreter shutdown."""
    code = run(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
