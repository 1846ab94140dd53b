"""Helpers for the native backend tests: build contexts, source snapshots, small projects.

The backends are driven directly with a :class:`BuildContext` built here, as
the build driver would build it: persistent ``build_dir``, empty
``install_dir``, a clean environment with the system ``PATH`` (cmake, ninja
and gcc come from the machine; no conda channel is needed).
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.build.base import BuildContext
from harness.frozen import FrozenDict, freeze


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: text}`` (dedented) under ``root``; ``*.sh`` files are executable."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        if rel.endswith(".sh"):
            path.chmod(0o755)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: relative path -> (content hash or kind, mtime in ns).

    Equal snapshots mean nothing was created, removed, rewritten or touched.
    """
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            if path.is_symlink():
                kind = "link:" + os.readlink(path)
            elif path.is_dir():
                kind = "dir"
            else:
                kind = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = (kind, stat.st_mtime_ns)
    return out


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment with the machine's PATH, as the driver gives when no prefix has tools."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def make_context(
    tmp_path: Path,
    source_dir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    profile_base: str = "release",
    variant: Mapping[str, str] | None = None,
    platform: str = "linux-64",
    channels: tuple[str, ...] = (),
    build_dir: Path | None = None,
    install_dir: Path | None = None,
    host_prefix: Path | None = None,
    build_prefix: Path | None = None,
    python: Path | None = None,
    env: Mapping[str, str] | None = None,
    cell_id: str = "cell",
) -> BuildContext:
    """A :class:`BuildContext` as the driver makes it; directories default to ``tmp_path/...``."""
    build_dir = build_dir or tmp_path / "build"
    install_dir = install_dir or tmp_path / "install"
    build_dir.mkdir(parents=True, exist_ok=True)
    install_dir.mkdir(parents=True, exist_ok=True)
    full_env = base_env(
        SRC_DIR=str(source_dir),
        BUILD_DIR=str(build_dir),
        INSTALL_PREFIX=str(install_dir),
        CPU_COUNT="2",
    )
    if host_prefix is not None:
        full_env["PREFIX"] = str(host_prefix)
    if build_prefix is not None:
        full_env["BUILD_PREFIX"] = str(build_prefix)
    if python is not None:
        full_env["PYTHON"] = str(python)
    full_env.update(env or {})
    manifest = tmp_path / "pixi.toml"
    if not manifest.exists():
        manifest.write_text("# the build tests drive backends directly\n", encoding="utf-8")
    return BuildContext(
        cell_id=cell_id,
        package="pkg",
        version="1.0",
        source_dir=source_dir,
        build_dir=build_dir,
        install_dir=install_dir,
        host_prefix=host_prefix,
        build_prefix=build_prefix,
        platform=platform,
        profile=profile_base,
        profile_base=profile_base,
        variant=FrozenDict(variant or {}),
        config=freeze(dict(config or {})),
        env=FrozenDict(full_env),
        python=python,
        cpu_count=2,
        log_path=build_dir.parent / f"{build_dir.name}.log",
        channels=channels,
        manifest=manifest,
    )
