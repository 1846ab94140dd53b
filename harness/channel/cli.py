"""``harness channel offline``: build the offline channel from the command line.

Kept here (not in ``harness/cli.py``) so the command can be wired in with one
line: ``return channel_main(argv)``. Like every harness command it prints a
``HarnessError`` as plain text and returns 2, never a traceback.

Callers that exit right after this returns should end the process with
``sys.stdout.flush(); os._exit(rc)`` (notes gotcha 1: rattler's indexer
threads can crash an interpreter that shuts down too soon).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.channel.offline import OfflineChannel, build_offline_channel
from harness.channel.wheelhouse import DEFAULT_REQUIREMENTS
from harness.errors import HarnessError


def default_channel_root(cache_root: Path | None = None) -> Path:
    """``<cache root>/channels/offline``.

    The cache root is ``cache_root`` if given, else ``$HARNESS_CACHE_DIR``,
    else ``.harness`` under the current directory (the harness's default).
    """
    if cache_root is None:
        env = os.environ.get("HARNESS_CACHE_DIR")
        cache_root = Path(env).expanduser() if env else Path.cwd() / ".harness"
    return Path(cache_root) / "channels" / "offline"


def _ensure_gitignore(cache_root: Path) -> None:
    """The cache root ignores itself, like pixi's ``.pixi/`` (DESIGN: data flow)."""
    gi = cache_root / ".gitignore"
    if not gi.exists():
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            gi.write_text("*\n")
        except OSError:
            pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness channel offline",
        description="Build a local conda channel (bridged CPython interpreters, cuda-version "
        "metapackages, pip/setuptools/wheel/pytest as noarch packages) so cells solve "
        "without conda-forge.",
    )
    p.add_argument(
        "--root", type=Path, help="channel directory (default: %(default)s)", default=None
    )
    p.add_argument(
        "--python",
        dest="pythons",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="an interpreter to bridge (repeatable; preferred over discovered ones)",
    )
    p.add_argument(
        "--wheel",
        dest="wheels",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a pure-Python wheel to add (repeatable)",
    )
    p.add_argument(
        "--requirement",
        dest="requirements",
        action="append",
        default=None,
        metavar="REQ",
        help="PEP 508 requirement to resolve per python (repeatable; "
        f"default: {' '.join(DEFAULT_REQUIREMENTS)})",
    )
    p.add_argument(
        "--no-requirements",
        action="store_true",
        help="convert only --wheel files, download nothing",
    )
    p.add_argument(
        "--no-discover", action="store_true", help="bridge only the --python interpreters"
    )
    p.add_argument(
        "--wheelhouse",
        type=Path,
        default=None,
        help="where wheels are cached (default: $HARNESS_WHEELHOUSE or "
        "~/.cache/variant-harness/wheels)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return p


def _report(channel: OfflineChannel) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    state = "built" if channel.rebuilt else "up to date"
    console.print(f"offline channel {state}: {channel.path}")
    console.print(f"  url: {channel.url}")
    table = Table("python", "interpreter", show_edge=False)
    for py in channel.pythons:
        table.add_row(py.version, str(py.executable))
    console.print(table)
    names: dict[str, int] = {}
    for fn in channel.packages:
        name = fn.rsplit("-", 2)[0]
        names[name] = names.get(name, 0) + 1
    listing = ", ".join(f"{n} ({c})" if c > 1 else n for n, c in sorted(names.items()))
    console.print(f"  {len(channel.packages)} packages: {listing}")


def channel_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``harness channel offline``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.no_requirements:
        requirements: Sequence[str] = ()
    elif args.requirements is not None:
        requirements = args.requirements
    else:
        requirements = DEFAULT_REQUIREMENTS
    root = args.root
    if root is None:
        root = default_channel_root()
        _ensure_gitignore(root.parent.parent)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    try:
        channel = build_offline_channel(
            root,
            pythons=args.pythons,
            wheels=args.wheels,
            requirements=requirements,
            discover=not args.no_discover,
            wheelhouse=args.wheelhouse,
            force=args.force,
            progress=progress,
        )
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    _report(channel)
    return 0
