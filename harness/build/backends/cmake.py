"""``pixi-build-cmake``: configure, build and install a CMake project out of tree.

The CMake binary directory lives in the variant's persistent build directory
(``<build_dir>/cmake``), so a second build of unchanged sources recompiles
nothing and a changed source recompiles only what depends on it; a changed
``build-type`` or ``extra-args`` is just a reconfigure of the same directory.
Nothing is ever generated next to the sources: ``-S``/``-B`` keep CMake out of
the source tree (DESIGN invariant 3).

The files land under ``install_dir`` through ``CMAKE_INSTALL_PREFIX`` and
``cmake --install``, laid out as in a conda prefix (``lib``, run paths relative
to the installed file); the harness packages them afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.build.base import BuildContext, BuildOutput
from harness.errors import BuildError

#: Configuration keys this backend reads (others, such as ``env``, belong to the harness).
BUILD_TYPE_KEY = "build-type"
EXTRA_ARGS_KEY = "extra-args"

_CACHE_FILE = "CMakeCache.txt"


def default_build_type(profile_base: str) -> str:
    """``Debug`` for the dev profile family, ``Release`` otherwise (what each profile is for)."""
    return "Debug" if profile_base == "dev" else "Release"


def install_rpath(platform: str) -> str | None:
    """The run path that finds the package's own and its dependencies' libraries in any prefix.

    The staged files are packaged as they are (nothing rewrites run paths
    afterwards), and CMake drops the build tree's run paths on install, so
    without this an executable linked to a shared library of its prefix
    would not start once installed.
    """
    if platform.startswith("osx"):
        return "@loader_path/../lib"
    if platform.startswith("win"):
        return None
    return "$ORIGIN/../lib"


def find_tool(name: str, env: Mapping[str, str]) -> str | None:
    """``name`` looked up on the build environment's ``PATH`` (build prefix first), not the harness's."""
    return shutil.which(name, path=env.get("PATH", ""))


def read_cache_entry(cache: Path, name: str) -> str | None:
    """The value of ``NAME:TYPE=value`` in a ``CMakeCache.txt`` (None when absent or unreadable)."""
    try:
        lines = cache.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    prefix = name + ":"
    for line in lines:
        if line.startswith(prefix) and "=" in line:
            return line.split("=", 1)[1]
    return None


def _config_key(name: str) -> str:
    return f"package.build.config.{name}"


def _string_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


class CMakeBackend:
    """Builds a CMake project with the build environment's ``cmake`` (Ninja when available)."""

    name = "pixi-build-cmake"
    version = "1"
    installs_into_prefix = False

    def check_config(self, config: Mapping[str, Any], manifest: Path | None) -> None:
        """``build-type``: a non-empty string; ``extra-args``: a list of strings."""
        build_type = config.get(BUILD_TYPE_KEY)
        if build_type is not None and (not isinstance(build_type, str) or not build_type.strip()):
            raise BuildError(
                f"{BUILD_TYPE_KEY} must be a non-empty string, not {build_type!r}",
                file=manifest,
                key=_config_key(BUILD_TYPE_KEY),
                hint='for example `build-type = "RelWithDebInfo"` (Debug, Release, '
                "RelWithDebInfo, MinSizeRel or a build type the project defines)",
            )
        extra = config.get(EXTRA_ARGS_KEY)
        if extra is not None and not _string_list(extra):
            raise BuildError(
                f"{EXTRA_ARGS_KEY} must be a list of strings, not {extra!r}",
                file=manifest,
                key=_config_key(EXTRA_ARGS_KEY),
                hint='for example `extra-args = ["-DWITH_TESTS=OFF"]`',
            )

    def build_type(self, ctx: BuildContext) -> str:
        """The configured ``build-type``, else the profile's default."""
        return str(ctx.config.get(BUILD_TYPE_KEY) or default_build_type(ctx.profile_base))

    def configure_args(self, ctx: BuildContext, cmake_dir: Path, *, ninja: bool) -> list[str]:
        """The ``cmake`` configure arguments (after the executable) for ``ctx``."""
        args = ["-S", str(ctx.source_dir), "-B", str(cmake_dir)]
        if ninja:
            args += ["-G", "Ninja"]
        args += [
            f"-DCMAKE_BUILD_TYPE={self.build_type(ctx)}",
            f"-DCMAKE_INSTALL_PREFIX={ctx.install_dir}",
            # conda's layout: GNUInstallDirs would pick lib64 on some distributions.
            "-DCMAKE_INSTALL_LIBDIR=lib",
        ]
        rpath = install_rpath(ctx.platform)
        if rpath is not None:
            args.append(f"-DCMAKE_INSTALL_RPATH={rpath}")
        if ctx.host_prefix is not None:
            args.append(f"-DCMAKE_PREFIX_PATH={ctx.host_prefix}")
        if ctx.python is not None:
            args += [f"-DPython_EXECUTABLE={ctx.python}", f"-DPython3_EXECUTABLE={ctx.python}"]
        args += list(ctx.config.get(EXTRA_ARGS_KEY) or ())
        return args

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Configure (or reconfigure) ``<build_dir>/cmake``, build it, install into ``install_dir``."""
        self.check_config(ctx.config, ctx.manifest)
        cmake = find_tool("cmake", ctx.env)
        if cmake is None:
            raise BuildError(
                f"cell {ctx.cell_id!r}: `cmake` is neither in the build prefix nor on PATH",
                file=ctx.manifest,
                key="package.build-dependencies",
                hint='add `cmake = "*"` to [package.build-dependencies], or install cmake',
            )
        ninja = find_tool("ninja", ctx.env) is not None
        cmake_dir = ctx.build_dir / "cmake"
        self._discard_stale_tree(ctx, cmake_dir, ninja=ninja)
        build_type = self.build_type(ctx)

        ctx.run([cmake, *self.configure_args(ctx, cmake_dir, ninja=ninja)], what="configure")
        # --config matters only for multi-config generators; single-config ones ignore it.
        ctx.run(
            [cmake, "--build", cmake_dir, "--parallel", str(ctx.cpu_count), "--config", build_type],
            what="build",
        )
        ctx.run([cmake, "--install", cmake_dir, "--config", build_type], what="install")
        return BuildOutput()

    def _discard_stale_tree(self, ctx: BuildContext, cmake_dir: Path, *, ninja: bool) -> None:
        """Remove a binary directory CMake would refuse to reuse.

        CMake stops with an error when the generator or the source directory
        differs from the one the cache was made with (ninja appeared in or
        left the build prefix, the project moved); starting afresh is then
        the only way on.
        """
        cache = cmake_dir / _CACHE_FILE
        generator = read_cache_entry(cache, "CMAKE_GENERATOR")
        if generator is None:
            return
        home = read_cache_entry(cache, "CMAKE_HOME_DIRECTORY")
        reasons: list[str] = []
        if (generator == "Ninja") != ninja:
            reasons.append(f"generator was {generator!r}")
        if home is not None and Path(home).resolve() != ctx.source_dir.resolve():
            reasons.append(f"source directory was {home}")
        if reasons:
            ctx.log(f"starting {cmake_dir} afresh: " + "; ".join(reasons))
            shutil.rmtree(cmake_dir)
