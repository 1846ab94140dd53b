"""``harness-build-script``: a bash build script, with conda-build's conventions.

For build systems the harness has no backend for, a package can carry its own
script: the ``script`` configuration value, or ``build.sh`` at the top of the
source tree.  As in conda-build and rattler-build, the script installs into
``$PREFIX``, which here is the staging directory the harness packages
afterwards; ``$HOST_PREFIX`` is the solved host environment it builds against.

The script runs under ``bash -euo pipefail`` so that a failing step fails the
build instead of packaging a half-built tree, and its working directory is
the variant's persistent build directory: the source tree stays untouched
(DESIGN invariant 3) and a script that builds incrementally keeps its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.build.base import BuildContext, BuildOutput
from harness.errors import BuildError

SCRIPT_KEY = "script"
NOARCH_KEY = "noarch"
#: The script looked for in the source tree when the configuration names none.
DEFAULT_SCRIPT = "build.sh"
#: Where an inline script is written to run (inside the build directory).
INLINE_SCRIPT_NAME = "harness-build-script.sh"

_SCRIPT_HINT = (
    'write the commands inline (`script = "make install PREFIX=$PREFIX"` or a list of '
    f"lines), or add `{DEFAULT_SCRIPT}` at the top of the source tree"
)


def _config_key(name: str) -> str:
    return f"package.build.config.{name}"


def inline_script(config: Mapping[str, Any]) -> str | None:
    """The configured script text (a list of lines is joined with newlines); None if not set."""
    value = config.get(SCRIPT_KEY)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return "\n".join(value)


class ScriptBackend:
    """Runs a bash script that installs the package into ``$PREFIX``."""

    name = "harness-build-script"
    version = "1"
    installs_into_prefix = True

    def check_config(self, config: Mapping[str, Any], manifest: Path | None) -> None:
        """``script``: a non-empty string or list of strings; ``noarch``: false or "generic"."""
        script = config.get(SCRIPT_KEY)
        if script is not None:
            is_text = isinstance(script, str)
            is_lines = isinstance(script, (list, tuple)) and all(
                isinstance(line, str) for line in script
            )
            if not (is_text or is_lines):
                raise BuildError(
                    f"{SCRIPT_KEY} must be a string or a list of strings, not {script!r}",
                    file=manifest,
                    key=_config_key(SCRIPT_KEY),
                    hint=_SCRIPT_HINT,
                )
            if not "\n".join(script if is_lines else [script]).strip():
                raise BuildError(
                    f"{SCRIPT_KEY} is empty",
                    file=manifest,
                    key=_config_key(SCRIPT_KEY),
                    hint=_SCRIPT_HINT,
                )
        noarch = config.get(NOARCH_KEY)
        if noarch not in (None, False, "generic"):
            raise BuildError(
                f'{NOARCH_KEY} must be false or "generic" for this backend, not {noarch!r}',
                file=manifest,
                key=_config_key(NOARCH_KEY),
                hint='`noarch = "generic"` packages files that suit every platform; leave it '
                "out for a platform-specific package",
            )

    def script_path(self, ctx: BuildContext) -> Path:
        """The script to run: the inline one (written into the build directory) or ``build.sh``."""
        text = inline_script(ctx.config)
        if text is not None:
            path = ctx.build_dir / INLINE_SCRIPT_NAME
            path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
            return path
        path = ctx.source_dir / DEFAULT_SCRIPT
        if not path.is_file():
            raise BuildError(
                f"cell {ctx.cell_id!r}: no build script: `{SCRIPT_KEY}` is not configured and "
                f"{path} does not exist",
                file=ctx.manifest,
                key=_config_key(SCRIPT_KEY),
                hint=_SCRIPT_HINT,
            )
        return path

    def script_env(self, ctx: BuildContext) -> dict[str, str]:
        """The conda-build variables, set here too so they hold whatever the caller passed."""
        env = {"PREFIX": str(ctx.install_dir), "INSTALL_PREFIX": str(ctx.install_dir)}
        if ctx.host_prefix is not None:
            env["HOST_PREFIX"] = str(ctx.host_prefix)
        if ctx.build_prefix is not None:
            env["BUILD_PREFIX"] = str(ctx.build_prefix)
        env["SRC_DIR"] = str(ctx.source_dir)
        env["BUILD_DIR"] = str(ctx.build_dir)
        env["CPU_COUNT"] = str(ctx.cpu_count)
        if ctx.python is not None:
            env["PYTHON"] = str(ctx.python)
        return env

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Run the script with ``bash -euo pipefail`` in the build directory."""
        self.check_config(ctx.config, ctx.manifest)
        script = self.script_path(ctx)
        ctx.run(
            ["bash", "-euo", "pipefail", script],
            cwd=ctx.build_dir,
            env=self.script_env(ctx),
            what="build script",
        )
        noarch = ctx.config.get(NOARCH_KEY) or None
        return BuildOutput(noarch=noarch)
