"""``pixi-build-rattler-build``: build a package from its ``recipe.yaml`` with rattler-build.

The recipe is rendered for exactly the cell's variant: every variant key of
the cell becomes a single-valued variant (``{"cuda_version": ["13.0"]}``), so
rattler-build cannot pick a value of its own, which is the reuse-across-variants
failure the harness exists to prevent.  A ``variants.yaml`` beside the recipe
(rattler-build's own convention) is read first; the cell's values override it.

rattler-build solves its build and host environments itself, from the cell's
channels and with the cell's declared virtual packages (passed as
``CONDA_OVERRIDE_*`` while it runs, so a CUDA 13 package builds on a runner
without a GPU), and produces a finished ``.conda`` under ``<build_dir>/output``.  It
copies ``path`` sources into its own work directory inside that output
directory, so the source tree is only read.  Its messages (including the build
script's output, which its exceptions do not carry) are appended to the build
log as they arrive.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import rattler_build as rb

from harness.build.base import BuildContext, BuildOutput
from harness.errors import BuildError
from harness.launch import scoped_environ

RECIPE_KEY = "recipe"
#: Where the recipe is looked for, relative to the source directory, in order.
RECIPE_CANDIDATES = ("recipe.yaml", "recipe/recipe.yaml")
RECIPE_FILE = "recipe.yaml"
VARIANTS_FILE = "variants.yaml"

_PLAIN_VERSION = re.compile(r"^(?:==)?\s*(?P<version>[0-9A-Za-z_+!.-]*?)(?:\.\*)?$")


#: The variable through which rattler's detection takes each virtual package's value.
OVERRIDES = {
    "__cuda": "CONDA_OVERRIDE_CUDA",
    "__glibc": "CONDA_OVERRIDE_GLIBC",
    "__linux": "CONDA_OVERRIDE_LINUX",
    "__osx": "CONDA_OVERRIDE_OSX",
    "__archspec": "CONDA_OVERRIDE_ARCHSPEC",
}


def override_values(declared: Sequence[str]) -> dict[str, str]:
    """``CONDA_OVERRIDE_*`` values that make rattler detect exactly ``declared`` (``__cuda=13``...).

    A virtual package the cell does not declare gets an empty value, which
    rattler reads as "absent": a runner's GPU must not let a build solve that
    the cell's own declaration would refuse.  ``__archspec``'s value is its
    build string (``__archspec=1=x86_64`` -> ``x86_64``).
    """
    values = dict.fromkeys(OVERRIDES.values(), "")
    for text in declared:
        name, _, rest = text.partition("=")
        if name in OVERRIDES:
            version, _, build = rest.partition("=")
            values[OVERRIDES[name]] = build if name == "__archspec" else version
    return values


def declared_virtual_packages(declared: Sequence[str]) -> scoped_environ:
    """Let rattler-build, which runs in this process, detect the cell's declared virtual packages.

    The harness builds one cell at a time per process, so the variables are
    set for exactly the duration of the build and then restored.  Nothing is
    changed when nothing is declared (a backend called outside a cell).
    """
    return scoped_environ(override_values(declared) if declared else {})


def _config_key(name: str) -> str:
    return f"package.build.config.{name}"


def recipe_variant_value(value: str) -> str:
    """A cell's variant value as a recipe variant expects it: ``"3.12.*"`` -> ``"3.12"``.

    Variant values in pixi manifests are match-spec versions (``3.12.*``,
    ``==13.0``); recipe variants are plain versions that rattler-build turns
    into ``3.12.*`` pins itself.  Anything else (``>=1.2``, ``3.12 *_cpython``,
    ``openblas``) is passed on unchanged.
    """
    text = value.strip()
    match = _PLAIN_VERSION.match(text)
    if match and match.group("version"):
        return match.group("version")
    return text


class LogCollector:
    """rattler-build progress callback that appends every message to the build log.

    It also keeps the error-level messages: rattler-build's exceptions say
    only "Script failed to execute", the reason is in the log events.
    """

    def __init__(self, log: TextIO) -> None:
        self._log = log
        self.errors: list[str] = []

    def _write(self, text: str) -> None:
        self._log.write(text if text.endswith("\n") else text + "\n")
        self._log.flush()

    def on_log(self, event: Any) -> None:
        message = str(event.message)
        span = f"[{event.span}] " if getattr(event, "span", None) else ""
        level = "" if event.level == "info" else f"{event.level}: "
        self._write(f"{level}{span}{message}")
        if event.level == "error" and message.strip():
            self.errors.append(message.strip().splitlines()[0])

    def on_build_step(self, event: Any) -> None:
        self._write(f"[{event.step_name}] {event.message}")

    def on_download_start(self, event: Any) -> None:
        self._write(f"downloading {event.url}")

    def on_download_progress(self, event: Any) -> None:
        return None

    def on_download_complete(self, event: Any) -> None:
        return None


class RattlerBuildBackend:
    """Renders ``recipe.yaml`` for the cell's variant and builds it with py-rattler-build."""

    name = "pixi-build-rattler-build"
    version = "1"
    installs_into_prefix = False

    def check_config(self, config: Mapping[str, Any], manifest: Path | None) -> None:
        """``recipe``: a non-empty path (relative to the source directory)."""
        recipe = config.get(RECIPE_KEY)
        if recipe is not None and (not isinstance(recipe, str) or not recipe.strip()):
            raise BuildError(
                f"{RECIPE_KEY} must be a non-empty path, not {recipe!r}",
                file=manifest,
                key=_config_key(RECIPE_KEY),
                hint="a path relative to the package's source directory, e.g. `recipe = "
                '"conda/recipe.yaml"` (a directory holding recipe.yaml also works)',
            )

    def recipe_path(self, ctx: BuildContext) -> Path:
        """The recipe file: the configured one, else ``recipe.yaml`` or ``recipe/recipe.yaml``."""
        configured = ctx.config.get(RECIPE_KEY)
        if configured is not None:
            path = ctx.source_dir / str(configured)
            if path.is_dir():
                path = path / RECIPE_FILE
            if not path.is_file():
                raise BuildError(
                    f"cell {ctx.cell_id!r}: recipe {path} does not exist",
                    file=ctx.manifest,
                    key=_config_key(RECIPE_KEY),
                    hint=f"the path is relative to the package's source directory {ctx.source_dir}",
                )
            return path
        for candidate in RECIPE_CANDIDATES:
            path = ctx.source_dir / candidate
            if path.is_file():
                return path
        raise BuildError(
            f"cell {ctx.cell_id!r}: no recipe in {ctx.source_dir} "
            f"(looked for {' and '.join(RECIPE_CANDIDATES)})",
            file=ctx.manifest,
            key=_config_key(RECIPE_KEY),
            hint=f"add {RECIPE_CANDIDATES[0]} to the source tree, or name it with "
            '`recipe = "path/to/recipe.yaml"`',
        )

    def cell_variants(self, ctx: BuildContext) -> dict[str, list[str]]:
        """The cell's variant as single-valued recipe variants."""
        return {key: [recipe_variant_value(value)] for key, value in ctx.variant.items()}

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Render for the cell's variant, build that one variant, return its ``.conda``."""
        self.check_config(ctx.config, ctx.manifest)
        recipe_file = self.recipe_path(ctx)
        platform = rb.PlatformConfig(target_platform=ctx.platform)
        recipe_key = _config_key(RECIPE_KEY)
        try:
            recipe = rb.Stage0Recipe.from_file(str(recipe_file))
            variants = rb.VariantConfig(self.cell_variants(ctx))
            beside = recipe_file.parent / VARIANTS_FILE
            if beside.is_file():
                own = rb.VariantConfig.from_yaml_with_context(
                    beside.read_text(encoding="utf-8"), rb.JinjaConfig(platform=platform)
                )
                variants = own.merge(variants)
            rendered = recipe.render(variants, rb.RenderConfig(platform=platform))
        except (rb.RattlerBuildError, OSError) as exc:
            raise BuildError(
                f"cell {ctx.cell_id!r}: cannot render {recipe_file} for variant "
                f"{dict(ctx.variant)}: {exc}",
                file=ctx.manifest,
                key=recipe_key,
                hint="a variable the recipe uses that the cell does not set must be a build "
                "variant of the manifest (or be listed in variants.yaml beside the recipe)",
            ) from None
        if len(rendered) != 1:
            found = (
                "; ".join(f"{v.recipe.package.name} {v.variant}" for v in rendered)
                or "none (the recipe is skipped for this platform)"
            )
            raise BuildError(
                f"cell {ctx.cell_id!r}: {recipe_file} renders to {len(rendered)} variants for "
                f"platform {ctx.platform} and variant {dict(ctx.variant)}, exactly one is "
                f"needed: {found}",
                file=ctx.manifest,
                key=recipe_key,
                hint="declare every variant key the recipe uses as a build variant of the "
                "manifest so that the cell fixes it; a recipe with several outputs cannot be "
                "built by this backend",
            )

        output_dir = ctx.build_dir / "output"
        # A package left by an earlier source must never be taken for this build's.
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir(parents=True)
        ctx.log(f"rattler-build: {recipe_file} with variant {rendered[0].variant} -> {output_dir}")
        if ctx.virtual_packages:
            ctx.log("rattler-build solves with the cell's virtual packages: " + ", ".join(ctx.virtual_packages))
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(ctx.log_path, "a", encoding="utf-8") as log, declared_virtual_packages(
                ctx.virtual_packages
            ):
                collector = LogCollector(log)
                result = rendered[0].run_build(
                    tool_config=rb.ToolConfiguration(test_strategy="skip"),
                    output_dir=output_dir,
                    channels=list(ctx.channels),
                    no_build_id=True,
                    progress_callback=collector,
                )
        except rb.RattlerBuildError as exc:
            detail = "; ".join(dict.fromkeys(collector.errors))
            raise ctx.failure(
                f"rattler-build failed: {exc}" + (f" ({detail})" if detail else "")
            ) from None
        packages = [Path(p) for p in result.packages]
        if len(packages) != 1:
            raise ctx.failure(
                f"rattler-build produced {len(packages)} packages, expected one: "
                + ", ".join(p.name for p in packages)
            )
        return BuildOutput(package=packages[0])
