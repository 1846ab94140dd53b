"""``pixi-build-python``: build a wheel with the host prefix's Python and stage it as a conda package.

The wheel is built through PEP 517 by the host prefix's own interpreter,
without build isolation (the host prefix was solved to contain the build
backend, as ``[package.host-dependencies]`` asks), by the stdlib-only script
:mod:`harness.build.pep517_hook`.  The build system comes from
``[build-system]`` in ``pyproject.toml``; without one, setuptools' legacy
backend (``setup.py``) is used, as pip does.

**Nothing is written into the source tree** (DESIGN invariant 3): in-place
build outputs are what let one variant's build leak into another's in pixi.
Every build system's output is redirected into the variant's own build
directory, which persists so that unchanged code is not recompiled:

* setuptools: ``DIST_EXTRA_CONFIG`` names a distutils configuration file,
  read after the project's own ``setup.cfg``, that sets ``[build] build_base``
  and ``[egg_info] egg_base``.  ``build_ext`` then keeps its object files and
  its built extensions there, and skips an extension whose sources are older
  than its built file (setuptools' own rule: a changed header that the
  extension does not list in ``depends`` does not trigger a rebuild).  Before
  each build the pure-Python copies and the ``.egg-info`` are removed, so a
  module deleted from the sources cannot linger in the wheel; compiled
  extensions stay, since they are what makes the build incremental.
* scikit-build-core: config setting ``build-dir``; meson-python: ``builddir``;
  maturin and setuptools-rust: ``CARGO_TARGET_DIR``.
* bytecode written while the backend or ``setup.py`` imports project modules:
  ``PYTHONPYCACHEPREFIX``.

Profiles: ``dev`` builds debug-style (setuptools and other compiler-driven
backends get ``-O0 -g`` appended to ``CFLAGS``/``CXXFLAGS``;
scikit-build-core ``cmake.build-type=Debug``; meson-python
``setup-args=-Dbuildtype=debug``); ``release`` leaves each build system's own
optimised defaults alone.  Editable installs are not done, even when
``editable = true`` is configured (a note is logged and the package is built
normally): setuptools' editable mode compiles extensions into the source tree,
the very leak the harness exists to prevent, and an editable package could not
be installed into a clean test prefix anyway.

Config settings (PEP 517 ``config_settings``), later wins: the harness's
build-directory and profile defaults < the ``config-settings`` table < the
``extra-args`` list.  ``extra-args`` are the arguments pixi-build-python hands
to pip; pip's ``-C``/``--config-settings`` forms (``"-Cbuilddir=x"``,
``"--config-settings=key=value"``, ``"-C", "key=value"``) and bare
``key=value`` become config settings (a key given twice becomes a list, as
with pip); verbosity and isolation flags of pip that mean nothing here are
ignored with a note; any other option is an error.  For list-valued argument
settings (``setup-args``, ``compile-args``, ... -- keys ending in ``-args``) the
user's values are appended to the harness's, so that a ``-Dbuildtype=...`` of
the user's comes last and wins.

Output: a pure wheel (``py3-none-any``, purelib root, no compiled files)
becomes a ``noarch: python`` package unless ``noarch = false``; anything else
is staged in the prefix layout of the host's Python and pinned with
``python_abi``.  ``noarch = true`` with a compiled wheel is an error: a noarch
package holding a ``.so`` would be broken on every other Python.
"""

from __future__ import annotations

import configparser
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from harness.build import pep517_hook
from harness.build.base import BuildContext, BuildOutput
from harness.build.wheel_install import (
    NATIVE_SUFFIXES,
    WheelContents,
    inspect_wheel,
    install_wheel,
    python_abi_depend,
    stage_noarch_python,
)
from harness.errors import BuildError, format_key
from harness.tomlfile import read_toml

#: PEP 517's fallback when a project has no ``[build-system]`` (what pip uses too).
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"

#: A config setting value as PEP 517 defines it.
SettingValue = str | list[str]

_CONFIG_KEY = ("package", "build", "config")

#: Python modules of build backends and build requirements -> the conda package that provides them.
_PROVIDERS = {
    "setuptools": "setuptools",
    "scikit_build_core": "scikit-build-core",
    "mesonpy": "meson-python",
    "hatchling": "hatchling",
    "flit_core": "flit-core",
    "poetry": "poetry-core",
    "pdm": "pdm-backend",
    "maturin": "maturin",
    "setuptools_rust": "setuptools-rust",
    "setuptools_scm": "setuptools-scm",
    "wheel": "wheel",
    "Cython": "cython",
    "numpy": "numpy",
    "pybind11": "pybind11",
    "nanobind": "nanobind",
}

#: pip options that mean nothing to a direct PEP 517 build and are ignored.
_IGNORED_PIP_FLAGS = frozenset(
    {
        "-v",
        "-vv",
        "-vvv",
        "--verbose",
        "-q",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-clean",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--ignore-installed",
        "--no-index",
    }
)
_CONFIG_FLAGS = ("--config-settings", "--config-setting", "-C")

#: Build-directory layout inside ``BuildContext.build_dir``.
WHEEL_DIR = "wheel"
SETUPTOOLS_BUILD = "setuptools/build"
SETUPTOOLS_EGG = "setuptools/egg-info"
SETUPTOOLS_CFG = "setuptools/distutils.cfg"
SKBUILD_DIR = "skbuild"
MESON_DIR = "meson"
CARGO_DIR = "cargo"
PYCACHE_DIR = "pycache"
HOOK_DIR = "pep517"


@dataclass(frozen=True)
class BuildSystem:
    """The project's PEP 517 build system."""

    backend: str  # "module:object"
    backend_path: tuple[Path, ...]  # absolute, inside the source tree
    requires: tuple[str, ...]
    origin: str  # where it came from, for the log

    @property
    def module(self) -> str:
        return self.backend.partition(":")[0].strip()


def provider_of(module: str) -> str:
    """The conda package that provides the Python module ``module`` (a best guess for hints)."""
    root = module.split(".", 1)[0]
    return _PROVIDERS.get(root, root.replace("_", "-").lower())


def read_build_system(source_dir: Path) -> BuildSystem:
    """``[build-system]`` of ``source_dir/pyproject.toml``, or setuptools' legacy backend."""
    path = Path(source_dir) / "pyproject.toml"
    if not path.is_file():
        return BuildSystem(DEFAULT_BACKEND, (), (), "default (no pyproject.toml)")
    doc = read_toml(path, cls=BuildError)
    table = doc.data.get("build-system")
    if table is None:
        return BuildSystem(DEFAULT_BACKEND, (), (), "default (no [build-system] in pyproject.toml)")
    if not isinstance(table, Mapping):
        raise doc.error("must be a table", ["build-system"], cls=BuildError)
    backend = table.get("build-backend", DEFAULT_BACKEND)
    if not isinstance(backend, str) or not backend.strip():
        raise doc.error(
            "must be a string such as 'setuptools.build_meta'",
            ["build-system", "build-backend"],
            cls=BuildError,
        )
    raw_path = table.get("backend-path", [])
    if not isinstance(raw_path, list) or not all(isinstance(p, str) for p in raw_path):
        raise doc.error("must be a list of strings", ["build-system", "backend-path"], cls=BuildError)
    root = Path(source_dir).resolve()
    backend_path: list[Path] = []
    for entry in raw_path:
        resolved = (root / entry).resolve()
        if resolved != root and root not in resolved.parents:
            raise doc.error(
                f"{entry!r} points outside the source tree",
                ["build-system", "backend-path"],
                cls=BuildError,
                hint="PEP 517: backend-path entries are relative to the project root and stay inside it",
            )
        backend_path.append(resolved)
    requires = table.get("requires", [])
    if not isinstance(requires, list):
        requires = []
    origin = "pyproject.toml [build-system]"
    return BuildSystem(
        backend.strip(), tuple(backend_path), tuple(str(r) for r in requires), origin
    )


def backend_family(backend: str) -> str:
    """``setuptools`` | ``scikit-build-core`` | ``meson-python`` | ``maturin`` | ``other``."""
    root = backend.partition(":")[0].strip().split(".", 1)[0]
    return {
        "setuptools": "setuptools",
        "scikit_build_core": "scikit-build-core",
        "mesonpy": "meson-python",
        "maturin": "maturin",
    }.get(root, "other")


def default_config_settings(
    family: str, build_dir: Path, profile_base: str
) -> dict[str, SettingValue]:
    """The config settings the harness gives a backend: its build directory and the profile's build type."""
    dev = profile_base == "dev"
    if family == "scikit-build-core":
        out: dict[str, SettingValue] = {"build-dir": str(Path(build_dir) / SKBUILD_DIR)}
        if dev:
            out["cmake.build-type"] = "Debug"
        return out
    if family == "meson-python":
        out = {"builddir": str(Path(build_dir) / MESON_DIR)}
        if dev:
            out["setup-args"] = ["-Dbuildtype=debug"]
        return out
    return {}


def _setting_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def config_settings_table(
    table: Any, *, manifest: Path | None = None, key: Sequence[str | int] = (*_CONFIG_KEY, "config-settings")
) -> dict[str, SettingValue]:
    """The ``config-settings`` table as PEP 517 settings.

    Nested tables flatten to dotted keys, so ``cmake.build-type = "Debug"``
    (which TOML reads as a nested table) means the setting
    ``cmake.build-type``; numbers and booleans become strings.
    """
    if not isinstance(table, Mapping):
        raise BuildError(
            f"must be a table of config settings, not {type(table).__name__}",
            file=manifest,
            key=format_key(list(key)),
            hint='write it as `config-settings = { "build-dir" = "..." }`',
        )
    out: dict[str, SettingValue] = {}
    for name, value in table.items():
        where = [*key, str(name)]
        if isinstance(value, Mapping):
            for sub, sub_value in config_settings_table(value, manifest=manifest, key=where).items():
                out[f"{name}.{sub}"] = sub_value
            continue
        if isinstance(value, (list, tuple)):
            items = [_setting_text(v) for v in value]
            if any(v is None for v in items):
                raise BuildError(
                    "a list of config settings may hold strings only",
                    file=manifest,
                    key=format_key(where),
                    hint='e.g. `setup-args = ["-Dfoo=bar"]`',
                )
            out[str(name)] = [v for v in items if v is not None]
            continue
        text = _setting_text(value)
        if text is None:
            raise BuildError(
                f"a config setting must be a string or a list of strings, not {type(value).__name__}",
                file=manifest,
                key=format_key(where),
            )
        out[str(name)] = text
    return out


@dataclass(frozen=True)
class BuiltWheel:
    """A wheel from the PEP 517 hook and the interpreter that built it (asked anew for every build)."""

    path: Path
    python: str  # "3.12"
    abiflags: str  # "t" for a free-threaded build


@dataclass(frozen=True)
class ExtraArgs:
    """``extra-args`` read as pip would: config settings, and the pip flags that are ignored."""

    settings: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]


def parse_extra_args(
    args: Any, *, manifest: Path | None = None, key: Sequence[str | int] = (*_CONFIG_KEY, "extra-args")
) -> ExtraArgs:
    """Turn ``extra-args`` into ``(key, value)`` config settings; :class:`BuildError` for the rest."""
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
        raise BuildError(
            "must be a list of strings",
            file=manifest,
            key=format_key(list(key)),
            hint='e.g. `extra-args = ["-Cbuilddir=build"]`',
        )
    settings: list[tuple[str, str]] = []
    ignored: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        where = format_key([*key, i])
        pair: str | None = None
        if arg in _CONFIG_FLAGS:
            if i + 1 >= len(args):
                raise BuildError(
                    f"{arg!r} needs a `key=value` after it",
                    file=manifest,
                    key=where,
                    hint=f'e.g. `"{arg}", "builddir=build"` or `"-Cbuilddir=build"`',
                )
            i += 1
            pair = args[i]
        elif arg.startswith(("--config-settings=", "--config-setting=")):
            pair = arg.split("=", 1)[1]
        elif arg.startswith("-C"):
            pair = arg[2:]
        elif arg in _IGNORED_PIP_FLAGS:
            ignored.append(arg)
            i += 1
            continue
        elif arg.startswith("-"):
            raise BuildError(
                f"{arg!r} is a pip option the harness cannot apply: it calls the build backend "
                "through PEP 517 itself, without pip",
                file=manifest,
                key=where,
                hint="give config settings as `-Ckey=value` or `key=value`, or in the "
                "`config-settings` table",
            )
        else:
            pair = arg
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise BuildError(
                f"{pair!r} is not a `key=value` config setting",
                file=manifest,
                key=where,
                hint='e.g. `"-Cbuilddir=build"` or `"cmake.build-type=Debug"`',
            )
        settings.append((name.strip(), value))
        i += 1
    return ExtraArgs(tuple(settings), tuple(ignored))


def merge_config_settings(
    defaults: Mapping[str, SettingValue],
    table: Mapping[str, SettingValue],
    extra: Sequence[tuple[str, str]] = (),
) -> dict[str, SettingValue]:
    """Harness defaults < ``config-settings`` < ``extra-args`` (see the module docstring)."""
    user: dict[str, SettingValue] = dict(table)
    from_extra: dict[str, list[str]] = {}
    for name, value in extra:
        from_extra.setdefault(name, []).append(value)
    for name, values in from_extra.items():
        user[name] = values[0] if len(values) == 1 else values
    out: dict[str, SettingValue] = dict(defaults)
    for name, value in user.items():
        base = out.get(name)
        if name.endswith("-args") and isinstance(base, list):
            out[name] = [*base, *([value] if isinstance(value, str) else value)]
        else:
            out[name] = value
    return out


def _check_bool(config: Mapping[str, Any], name: str, manifest: Path | None) -> None:
    if name in config and not isinstance(config[name], bool):
        raise BuildError(
            f"must be true or false, not {config[name]!r}",
            file=manifest,
            key=format_key([*_CONFIG_KEY, name]),
        )


def _check_strings(config: Mapping[str, Any], name: str, manifest: Path | None) -> None:
    value = config.get(name)
    if value is not None and (
        not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)
    ):
        raise BuildError(
            "must be a list of strings",
            file=manifest,
            key=format_key([*_CONFIG_KEY, name]),
        )


def setuptools_config(build_base: Path, egg_base: Path, existing: str = "") -> str:
    """The ``DIST_EXTRA_CONFIG`` file: ``existing`` (one the environment named) plus the redirection.

    Values are written raw: distutils interpolates its configuration files, so
    a ``%`` in the build directory is doubled, and an existing file's text,
    already written for distutils, is kept as it is.
    """
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    if existing:
        parser.read_string(existing)
    for section, option, path in (
        ("build", "build_base", build_base),
        ("egg_info", "egg_base", egg_base),
    ):
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, option, str(path).replace("%", "%%"))
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _prepare_setuptools_state(build_dir: Path) -> None:
    """Drop what setuptools would otherwise carry over stale; keep compiled extensions.

    ``build_py`` copies a module only when the copy is older, and never
    deletes one, so a module removed from the sources would still be shipped;
    the ``.egg-info`` keeps its old ``SOURCES.txt``.  Extensions stay: they
    are setuptools' incremental state.
    """
    egg_base = build_dir / SETUPTOOLS_EGG
    shutil.rmtree(egg_base, ignore_errors=True)
    egg_base.mkdir(parents=True, exist_ok=True)
    build_base = build_dir / SETUPTOOLS_BUILD
    build_base.mkdir(parents=True, exist_ok=True)
    for child in build_base.iterdir():
        if child.name.startswith("bdist.") and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith("lib") and child.is_dir():
            for path in sorted(child.rglob("*"), reverse=True):
                if path.is_symlink() or (path.is_file() and not path.name.endswith(NATIVE_SUFFIXES)):
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()


def _flags(env: Mapping[str, str], name: str, extra: str) -> str:
    return f"{env.get(name, '')} {extra}".strip()


class PythonBackend:
    """Builds a wheel through PEP 517 with the host prefix's Python; see the module docstring."""

    name = "pixi-build-python"
    version = "1"
    installs_into_prefix = False

    def check_config(self, config: Mapping[str, Any], manifest: Path | None) -> None:
        """Type checks for the keys this backend reads (unknown keys are left to pixi's schema)."""
        for name in ("noarch", "editable", "ignore-pyproject-manifest", "ignore-pypi-mapping"):
            _check_bool(config, name, manifest)
        for name in ("compilers", "extra-input-globs"):
            _check_strings(config, name, manifest)
        if "debug-dir" in config and not isinstance(config["debug-dir"], str):
            raise BuildError(
                "must be a path (a string)",
                file=manifest,
                key=format_key([*_CONFIG_KEY, "debug-dir"]),
            )
        env = config.get("env")
        if env is not None:
            if not isinstance(env, Mapping):
                raise BuildError(
                    "must be a table of environment variables",
                    file=manifest,
                    key=format_key([*_CONFIG_KEY, "env"]),
                    hint='e.g. `env = { SETUPTOOLS_SCM_PRETEND_VERSION = "1.0" }`',
                )
            for var, value in env.items():
                if not isinstance(value, (str, int, float, bool)):
                    raise BuildError(
                        f"environment variable {var!r} must be a string, not {type(value).__name__}",
                        file=manifest,
                        key=format_key([*_CONFIG_KEY, "env", str(var)]),
                        hint='write it as `NAME = "value"`',
                    )
        if "config-settings" in config:
            config_settings_table(config["config-settings"], manifest=manifest)
        if "extra-args" in config:
            parse_extra_args(config["extra-args"], manifest=manifest)

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Build the wheel, then stage it as ``noarch: python`` or in the host Python's prefix layout."""
        if ctx.python is None:
            raise BuildError(
                f"cell {ctx.cell_id!r}: the host environment has no Python to build "
                f"{ctx.package!r} with",
                file=ctx.manifest,
                key="package.host-dependencies",
                hint="add `python` and the package's build backend (e.g. `setuptools`) to "
                "[package.host-dependencies]",
            )
        config = ctx.config
        self.check_config(config, ctx.manifest)
        notes: list[str] = []
        if config.get("editable"):
            note = (
                "editable = true is not applied: the package is built and installed normally "
                "(an editable setuptools build compiles into the source tree)"
            )
            ctx.log(note)
            notes.append(note)

        system = read_build_system(ctx.source_dir)
        family = backend_family(system.backend)
        ctx.log(f"build backend {system.backend} ({system.origin}), python {ctx.python}")
        extra = parse_extra_args(config.get("extra-args", ()), manifest=ctx.manifest)
        if extra.ignored:
            note = "extra-args: ignored pip options " + " ".join(extra.ignored)
            ctx.log(note)
            notes.append(note)
        settings = merge_config_settings(
            default_config_settings(family, ctx.build_dir, ctx.profile_base),
            config_settings_table(config.get("config-settings", {}), manifest=ctx.manifest),
            extra.settings,
        )
        env = self._environment(ctx, family, notes)
        for var, value in env.items():
            ctx.log(f"{var}={value}")
        ctx.log(f"config settings: {json.dumps(settings, sort_keys=True)}")

        built = self._build_wheel(ctx, system, settings, env)
        output = self._stage(ctx, built, notes)
        # Staged, the wheel is a compressed copy of what the artifact will hold;
        # the backend's own build tree (what makes a rebuild incremental) stays.
        shutil.rmtree(built.path.parent, ignore_errors=True)
        return output

    def _environment(self, ctx: BuildContext, family: str, notes: list[str]) -> dict[str, str]:
        """Variables added to ``ctx.env`` for the build: output redirection and profile flags."""
        build_dir = ctx.build_dir
        env: dict[str, str] = {}

        def put(var: str, value: str) -> None:
            if var in ctx.env:
                note = f"{var} is already set in the build environment ({ctx.env[var]!r}) and is kept"
                ctx.log(note)
                notes.append(note)
            else:
                env[var] = value

        _prepare_setuptools_state(build_dir)
        existing = ""
        if "DIST_EXTRA_CONFIG" in ctx.env:
            # Keep what the environment's file sets; only the output locations are ours.
            try:
                existing = Path(ctx.env["DIST_EXTRA_CONFIG"]).read_text(encoding="utf-8")
            except OSError:
                existing = ""
            note = f"DIST_EXTRA_CONFIG {ctx.env['DIST_EXTRA_CONFIG']} merged into {SETUPTOOLS_CFG}"
            ctx.log(note)
            notes.append(note)
        cfg = build_dir / SETUPTOOLS_CFG
        try:
            text = setuptools_config(build_dir / SETUPTOOLS_BUILD, build_dir / SETUPTOOLS_EGG, existing)
        except configparser.Error as exc:
            raise BuildError(
                f"DIST_EXTRA_CONFIG {ctx.env['DIST_EXTRA_CONFIG']} cannot be read: {exc}",
                file=ctx.manifest,
                key="package.build.config.env.DIST_EXTRA_CONFIG",
            ) from None
        cfg.write_text(text, encoding="utf-8")
        env["DIST_EXTRA_CONFIG"] = str(cfg)
        if ctx.env.get("SETUPTOOLS_USE_DISTUTILS") == "stdlib":
            # The standard library's distutils does not read DIST_EXTRA_CONFIG, so
            # its build/ and *.egg-info would land in the source tree.
            env["SETUPTOOLS_USE_DISTUTILS"] = "local"
            note = "SETUPTOOLS_USE_DISTUTILS=stdlib replaced by local (keeps outputs out of the source tree)"
            ctx.log(note)
            notes.append(note)
        put("CARGO_TARGET_DIR", str(build_dir / CARGO_DIR))
        put("PYTHONPYCACHEPREFIX", str(build_dir / PYCACHE_DIR))
        env["PYTHONNOUSERSITE"] = "1"
        if ctx.profile_base == "dev" and family not in ("scikit-build-core", "meson-python"):
            env["CFLAGS"] = _flags(ctx.env, "CFLAGS", "-O0 -g")
            env["CXXFLAGS"] = _flags(ctx.env, "CXXFLAGS", "-O0 -g")
        return env

    def _build_wheel(
        self,
        ctx: BuildContext,
        system: BuildSystem,
        settings: Mapping[str, SettingValue],
        env: Mapping[str, str],
    ) -> BuiltWheel:
        """Run the PEP 517 hook; return the wheel it built."""
        assert ctx.python is not None
        wheel_dir = ctx.build_dir / WHEEL_DIR
        shutil.rmtree(wheel_dir, ignore_errors=True)
        wheel_dir.mkdir(parents=True)
        hook_dir = ctx.build_dir / HOOK_DIR
        hook_dir.mkdir(parents=True, exist_ok=True)
        result_path = hook_dir / "result.json"
        result_path.unlink(missing_ok=True)
        request_path = hook_dir / "request.json"
        request_path.write_text(
            json.dumps(
                {
                    "backend": system.backend,
                    "backend_path": [str(p) for p in system.backend_path],
                    "wheel_dir": str(wheel_dir),
                    "config_settings": dict(settings),
                    "result": str(result_path),
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        argv = [str(ctx.python), "-u", str(Path(pep517_hook.__file__).resolve()), str(request_path)]
        try:
            ctx.run(argv, cwd=ctx.source_dir, env=env, what="build wheel")
        except BuildError as exc:
            raise self._explain(ctx, system, result_path, exc) from None
        result = self._result(ctx, result_path)
        wheel = wheel_dir / str(result.get("wheel", ""))
        if not result.get("ok") or not wheel.is_file():
            raise ctx.failure(f"the build backend {system.backend} reported no wheel")
        python = str(result.get("python", ""))
        if not python:
            raise ctx.failure("the host Python did not report its version")
        ctx.log(f"built {wheel.name} with python {python}")
        return BuiltWheel(wheel, python, str(result.get("abiflags", "")))

    def _result(self, ctx: BuildContext, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _explain(
        self, ctx: BuildContext, system: BuildSystem, result_path: Path, exc: BuildError
    ) -> BuildError:
        """Turn a missing backend or build requirement into a message that names the module."""
        result = self._result(ctx, result_path)
        error = result.get("error")
        missing = str(result.get("missing") or "")
        if error in ("import", "attribute"):
            module = missing or system.module
            what = (
                f"the build backend `{system.backend}` ({system.origin}) cannot be imported "
                f"by the host prefix's Python: {result.get('message', '')}"
            )
            if error == "attribute":
                return BuildError(
                    f"cell {ctx.cell_id!r}: {what}",
                    file=ctx.manifest,
                    key="package.build",
                    hint=f"check `build-backend` in {ctx.source_dir / 'pyproject.toml'}; "
                    f"full log: {ctx.log_path}",
                )
            return BuildError(
                f"cell {ctx.cell_id!r}: {what} (module `{module}` is missing)",
                file=ctx.manifest,
                key="package.host-dependencies",
                hint=f"add `{provider_of(module)}` to [package.host-dependencies]: the wheel is "
                "built in the host prefix without build isolation; "
                f"full log: {ctx.log_path}",
            )
        if error == "build-import" and missing:
            return BuildError(
                f"{exc.message}\n  the build needs the Python module `{missing}`, which the host "
                "prefix does not have",
                file=ctx.manifest,
                key="package.host-dependencies",
                hint=f"add `{provider_of(missing)}` to [package.host-dependencies]; "
                f"full log: {ctx.log_path}",
            )
        return exc

    def _stage(self, ctx: BuildContext, built: BuiltWheel, notes: list[str]) -> BuildOutput:
        wheel = built.path
        contents = inspect_wheel(wheel)
        self._note_version(ctx, contents, notes)
        noarch = ctx.config.get("noarch")
        imports = contents.top_level
        if contents.pure and noarch is not False:
            files = stage_noarch_python(contents, ctx.install_dir)
            ctx.log(f"staged {len(files)} files as noarch: python")
            return BuildOutput(
                noarch="python",
                entry_points=contents.entry_points,
                imports=imports,
                notes=tuple(notes),
            )
        if noarch is True:
            raise BuildError(
                f"cell {ctx.cell_id!r}: noarch = true, but {wheel.name} is not a pure-Python wheel "
                "(it holds compiled code or is tagged for one Python)",
                file=ctx.manifest,
                key=format_key([*_CONFIG_KEY, "noarch"]),
                hint="remove `noarch = true` (or set it to false): a noarch package with a "
                "compiled extension breaks on every other Python",
            )
        files = install_wheel(contents, ctx.install_dir, python_version=built.python)
        ctx.log(f"staged {len(files)} files for python {built.python}")
        return BuildOutput(
            depends=(python_abi_depend(built.python, built.abiflags),),
            imports=imports,
            notes=tuple(notes),
        )

    def _note_version(self, ctx: BuildContext, contents: WheelContents, notes: list[str]) -> None:
        try:
            same = Version(contents.version) == Version(ctx.version)
        except InvalidVersion:
            same = contents.version == ctx.version
        if not same:
            note = (
                f"the wheel's version {contents.version} differs from the package version "
                f"{ctx.version} in the manifest"
            )
            ctx.log(note)
            notes.append(note)
