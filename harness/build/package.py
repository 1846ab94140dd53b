"""Packaging a build as a conda package, in a directory that is its own channel.

Every build, dev or release, ends as one ``.conda`` archive (assembled with
py-rattler-build's ``assemble_package``) in an artifact directory that is
indexed as a local channel.  Release cells solve their test environment
against it, so the package's ``depends`` (its run-dependencies plus the
cell's variant pins) decide what the test prefix holds; dev cells install the
same archive beside their development environment.  Either way rattler links
the files, records them in ``conda-meta`` and removes them when the next
artifact replaces this one.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from rattler_build import assemble_package

from harness import faults
from harness.build.base import BuildOutput
from harness.solve import run_sync


def build_string(variant: dict[str, str], key: str, fingerprint: str) -> str:
    """``py312h<key><src>_0``: the python variant (if any) first, as conda-forge's build strings do.

    The key and the source fingerprint are both in it, so two artifacts of
    one variant never share a file name (rattler's package cache is keyed by
    file name; a reused name would hand out stale bytes).
    """
    prefix = ""
    python = variant.get("python")
    if python:
        digits = "".join(python.split(".")[:2]).strip("*").replace("*", "")
        if digits.isdigit():
            prefix = f"py{digits}"
    return f"{prefix}h{key[:8]}{fingerprint[:6]}_0"


def _write_entry_points(install_dir: Path, entry_points: Sequence[str]) -> None:
    """``python-scripts/<name>`` launchers for a noarch: python package (rattler links them into bin/)."""
    for spec in entry_points:
        name, _, target = (s.strip() for s in spec.partition("="))
        module, _, func = target.partition(":")
        func = func.split("[")[0].strip()
        script = install_dir / "python-scripts" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        top = func.split(".")[0]
        script.write_text(
            "#!/usr/bin/env python\n"
            "import sys\n"
            f"from {module.strip()} import {top}\n"
            "if __name__ == '__main__':\n"
            f"    sys.exit({func}())\n",
            encoding="utf-8",
        )
        script.chmod(0o755)


def assemble(
    *,
    name: str,
    version: str,
    build: str,
    platform: str,
    output: BuildOutput,
    install_dir: Path,
    depends: Sequence[str],
    channel_dir: Path,
) -> tuple[Path, str]:
    """Package the staged files (or adopt ``output.package``) into ``channel_dir``; index it.

    Returns the archive's path and its subdir.
    """
    if output.package is not None:
        source = Path(output.package)
        subdir = source.parent.name if source.parent.name in ("noarch", platform) else platform
        target_dir = channel_dir / subdir
        target_dir.mkdir(parents=True, exist_ok=True)
        archive = target_dir / source.name
        shutil.copy2(source, archive)
    else:
        subdir = "noarch" if output.noarch else platform
        target_dir = channel_dir / subdir
        target_dir.mkdir(parents=True, exist_ok=True)
        if output.noarch == "python" and output.entry_points:
            _write_entry_points(install_dir, output.entry_points)
        if not any(install_dir.rglob("*")):
            # An empty package is legal (a metapackage) but almost always a mistake
            # of the build; keep a marker so the archive can be assembled.
            marker = install_dir / "share" / "harness" / f"{name}.empty"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("this build installed no files\n", encoding="utf-8")
        out = assemble_package(
            name=name,
            version=version,
            target_platform=subdir,
            build_string=build,
            output_dir=target_dir,
            files_dir=install_dir,
            depends=list(dict.fromkeys(depends)) or None,
            noarch=output.noarch,
            summary=f"{name} {version}, built by variant-harness",
        )
        archive = Path(out.path)
    faults.point("package.assembled")
    for sub in ("noarch", platform):
        (channel_dir / sub).mkdir(parents=True, exist_ok=True)
    index_channel(channel_dir)
    return archive, subdir


def index_channel(channel_dir: Path) -> None:
    """Write repodata for a local channel (always from scratch: archives may share names)."""
    from rattler.index import index_fs

    run_sync(index_fs(Path(channel_dir), force=True))
