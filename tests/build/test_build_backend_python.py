"""The pixi-build-python backend: real PEP 517 builds with a host prefix's Python.

The host "prefix" is a virtualenv of a pyenv CPython with setuptools and wheel
from the local wheel cache (no conda channel is needed to prove what matters
here: the wheel is built by the host's Python, nothing is written into the
source tree, a second build recompiles nothing, and the staged files are laid
out as the package kind requires).
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.build.backends import get_backend
from harness.build.backends.python import (
    DEFAULT_BACKEND,
    PythonBackend,
    backend_family,
    config_settings_table,
    default_config_settings,
    merge_config_settings,
    parse_extra_args,
    provider_of,
    read_build_system,
    setuptools_config,
)
from harness.build.base import BuildContext, BuildOutput
from harness.build.wheel_install import (
    INSTALLER,
    entry_point_script,
    inspect_wheel,
    install_wheel,
    python_abi_depend,
    stage_noarch_python,
    top_level_names,
)
from harness.errors import BuildError
from harness.frozen import FrozenDict, freeze

PYENV = Path.home() / ".pyenv" / "versions"
PY312 = PYENV / "3.12.1" / "bin" / "python"
PY38 = PYENV / "3.8.18" / "bin" / "python"
WHEELS = Path.home() / ".cache" / "variant-harness" / "wheels"
MANIFEST = Path("/project/pixi.toml")


# --------------------------------------------------------------------------- fixtures


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


EXT_C = """
#include <Python.h>

static PyObject *version(PyObject *self, PyObject *args) {
    return PyLong_FromLong(PY_MAJOR_VERSION * 100 + PY_MINOR_VERSION);
}
static PyMethodDef methods[] = {{"version", version, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&module); }
"""

CEXT = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "cext"
        version = "0.1.0"
    """,
    "setup.py": """
        from setuptools import Extension, setup

        setup(
            package_dir={"": "src"},
            packages=["cext"],
            ext_modules=[Extension("cext._ext", ["src/cext/ext.c"])],
        )
    """,
    "src/cext/__init__.py": """
        from cext._ext import version
    """,
    "src/cext/ext.c": EXT_C,
}

PURE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "purepkg"
        version = "0.1.0"

        [project.scripts]
        purehello = "purepkg.cli:main"

        [tool.setuptools.packages.find]
        where = ["src"]
    """,
    "src/purepkg/__init__.py": """
        VALUE = 42
    """,
    "src/purepkg/cli.py": """
        def main():
            print("hello from purepkg")
            return 0
    """,
    "src/purepkg/extra.py": """
        EXTRA = True
    """,
}

#: An in-tree PEP 517 backend (stdlib only) that bakes one config setting into the wheel.
IN_TREE = {
    "pyproject.toml": """
        [build-system]
        requires = []
        build-backend = "simple_backend"
        backend-path = ["_backend"]
    """,
    "_backend/simple_backend.py": '''
        import base64
        import hashlib
        import zipfile

        import simple_helper


        def _digest(data):
            return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            settings = config_settings or {}
            files = {
                "inpkg/__init__.py": simple_helper.module_text(settings),
                "inpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: inpkg\\nVersion: 1.0\\n",
                "inpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
                "inpkg-1.0.dist-info/entry_points.txt": "[console_scripts]\\ninhello = inpkg:main\\n",
            }
            name = "inpkg-1.0-py3-none-any.whl"
            record = []
            with zipfile.ZipFile(wheel_directory + "/" + name, "w") as zf:
                for path, text in files.items():
                    data = text.encode()
                    zf.writestr(path, data)
                    record.append("%s,sha256=%s,%d" % (path, _digest(data), len(data)))
                record.append("inpkg-1.0.dist-info/RECORD,,")
                zf.writestr("inpkg-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
            return name
    ''',
    "_backend/simple_helper.py": """
        import json
        import sys


        def module_text(settings):
            return (
                "SETTINGS = %r\\nBUILT_BY = %r\\n\\ndef main():\\n    return 0\\n"
                % (json.dumps(settings, sort_keys=True), "%d.%d" % sys.version_info[:2])
            )
    """,
}


def snapshot(root: Path) -> dict[str, tuple[int, int, bool]]:
    """Every path under ``root`` (directories too) with its size, mtime and kind."""
    out: dict[str, tuple[int, int, bool]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            out[str(path.relative_to(root))] = (0 if is_dir else st.st_size, st.st_mtime_ns, is_dir)
    st = root.stat()
    out["."] = (0, st.st_mtime_ns, True)
    return out


def make_ctx(
    tmp: Path,
    source: Path,
    *,
    python: Path | None,
    profile: str = "release",
    config: Mapping[str, Any] | None = None,
    build_dir: Path | None = None,
    name: str = "build",
) -> BuildContext:
    """A BuildContext as the build driver makes it, with a clean environment (no PYTHON* leaks)."""
    prefix = python.parent.parent if python is not None else None
    build_dir = build_dir or tmp / f"{name}-dir"
    install_dir = tmp / f"{name}-install"
    build_dir.mkdir(parents=True, exist_ok=True)
    install_dir.mkdir(parents=True)
    path = os.pathsep.join([*([str(prefix / "bin")] if prefix else []), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {
        "PATH": path,
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "SRC_DIR": str(source),
        "BUILD_DIR": str(build_dir),
        "INSTALL_PREFIX": str(install_dir),
        "CPU_COUNT": "2",
    }
    if prefix is not None:
        env["PREFIX"] = str(prefix)
        env["PYTHON"] = str(python)
    return BuildContext(
        cell_id="py312",
        package=source.name,
        version="0.1.0",
        source_dir=source,
        build_dir=build_dir,
        install_dir=install_dir,
        host_prefix=prefix,
        build_prefix=None,
        platform="linux-64",
        profile=profile,
        profile_base=profile,
        variant=FrozenDict({"python": "3.12"}),
        config=freeze(dict(config or {})),
        env=FrozenDict(env),
        python=python,
        cpu_count=2,
        log_path=tmp / f"{name}.log",
        manifest=MANIFEST,
    )


@pytest.fixture(scope="module")
def host312(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host "prefix": a virtualenv of CPython 3.12 with setuptools and wheel, no pip."""
    if not PY312.is_file():
        pytest.skip(f"needs CPython 3.12 at {PY312}")
    cached = [p.name for p in WHEELS.glob("*.whl")] if WHEELS.is_dir() else []
    for dist in ("setuptools", "wheel"):
        if not any(n.startswith(f"{dist}-") for n in cached):
            pytest.skip(f"the wheel cache {WHEELS} has no {dist} wheel")
    venv = tmp_path_factory.mktemp("host312") / "venv"
    subprocess.run([str(PY312), "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = subprocess.run(
        [str(PY312), "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--disable-pip-version-check", "--no-index", "--find-links", str(WHEELS), "setuptools", "wheel"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv / "bin" / "python"



@dataclass(frozen=True)
class Built:
    """One finished build, with the source tree's snapshot taken before it."""

    ctx: BuildContext
    output: BuildOutput
    before: dict[str, tuple[int, int, bool]]


@pytest.fixture(scope="module")
def cext_release(tmp_path_factory: pytest.TempPathFactory, host312: Path) -> Built:
    """The C-extension package built once, release profile, shared by the tests that inspect it."""
    tmp = tmp_path_factory.mktemp("cext")
    source = write_tree(tmp / "cext", CEXT)
    before = snapshot(source)
    ctx = make_ctx(tmp, source, python=host312)
    return Built(ctx, PythonBackend().build(ctx), before)


def site_packages(ctx: BuildContext) -> Path:
    return ctx.install_dir / "lib" / "python3.12" / "site-packages"


def run_python(python: Path, args: list[str], site: Path, cwd: Path) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_record(root: Path, site: Path, dist_info: str, *, noarch: bool = False) -> set[str]:
    """RECORD must list every staged file with its real hash; return the listed paths (relative to root).

    RECORD paths are relative to site-packages *as installed*; in the
    ``noarch: python`` staging layout ``site-packages/`` and ``python-scripts/``
    sit at the top and move under ``lib/pythonX.Y/`` and ``bin/`` on install.
    """
    rows = list(csv.reader(io.StringIO((site / dist_info / "RECORD").read_text())))
    listed: set[str] = set()
    for path, digest, size in rows:
        if noarch and path.startswith("../../../"):
            rest = path[len("../../../") :]
            target = root / (f"python-scripts/{rest[4:]}" if rest.startswith("bin/") else rest)
        else:
            target = Path(os.path.normpath(site / path))
        listed.add(str(target.relative_to(root)))
        if path == f"{dist_info}/RECORD":
            assert (digest, size) == ("", "")
            continue
        data = target.read_bytes()
        assert digest == record_digest(data), path
        assert int(size) == len(data), path
    staged = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert listed == staged
    return listed


def log_of(ctx: BuildContext) -> str:
    return ctx.log_path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- compiled builds


def test_compiled_extension_is_staged_for_the_host_python(cext_release: Built, host312: Path) -> None:
    ctx, out = cext_release.ctx, cext_release.output
    site = site_packages(ctx)
    assert len(list((site / "cext").glob("_ext.cpython-312-*.so"))) == 1
    assert out.noarch is None
    assert out.depends == ("python_abi 3.12.* *_cp312",)
    assert out.imports == ("cext",)
    assert out.entry_points == ()
    assert run_python(host312, ["-c", "import cext; print(cext.version())"], site, ctx.build_dir) == "312"
    info = site / "cext-0.1.0.dist-info"
    assert (info / "INSTALLER").read_text() == f"{INSTALLER}\n"
    check_record(ctx.install_dir, site, info.name)
    assert "building 'cext._ext' extension" in log_of(ctx)


def test_build_writes_nothing_into_the_source_tree(cext_release: Built) -> None:
    ctx = cext_release.ctx
    assert snapshot(ctx.source_dir) == cext_release.before
    # ... because setuptools' outputs went to the variant's build directory instead.
    assert list(ctx.build_dir.rglob("ext.o"))
    assert list(ctx.build_dir.rglob("cext.egg-info"))


def test_second_build_recompiles_nothing(cext_release: Built, tmp_path: Path, host312: Path) -> None:
    first = cext_release.ctx
    compiled = [*first.build_dir.rglob("*.o"), *first.build_dir.rglob("_ext*.so")]
    assert len(compiled) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in compiled}
    again = make_ctx(tmp_path, first.source_dir, python=host312, build_dir=first.build_dir, name="again")
    out = PythonBackend().build(again)
    assert {p: p.stat().st_mtime_ns for p in compiled} == mtimes
    assert "building 'cext._ext' extension" not in log_of(again)
    assert out == cext_release.output
    assert list((site_packages(again) / "cext").glob("_ext.cpython-312-*.so"))
    assert snapshot(first.source_dir) == cext_release.before


def test_dev_profile_compiles_without_optimisation(tmp_path: Path, host312: Path, cext_release: Built) -> None:
    source = write_tree(tmp_path / "cext", CEXT)
    before = snapshot(source)
    ctx = make_ctx(tmp_path, source, python=host312, profile="dev")
    out = PythonBackend().build(ctx)
    compile_lines = [line for line in log_of(ctx).splitlines() if "-c src/cext/ext.c" in line]
    assert compile_lines and all("-O0 -g" in line for line in compile_lines)
    release_lines = [
        line for line in log_of(cext_release.ctx).splitlines() if "-c src/cext/ext.c" in line
    ]
    assert release_lines and not any("-O0" in line for line in release_lines)
    assert out.depends == ("python_abi 3.12.* *_cp312",)
    assert snapshot(source) == before


def test_noarch_true_with_a_compiled_wheel_is_an_error(cext_release: Built, tmp_path: Path, host312: Path) -> None:
    first = cext_release.ctx
    ctx = make_ctx(
        tmp_path, first.source_dir, python=host312, config={"noarch": True}, build_dir=first.build_dir
    )
    with pytest.raises(BuildError) as err:
        PythonBackend().build(ctx)
    assert err.value.key == "package.build.config.noarch"
    assert err.value.file == MANIFEST
    assert "not a pure-Python wheel" in err.value.message


def test_failing_compile_names_the_command_and_shows_the_log_tail(tmp_path: Path, host312: Path) -> None:
    source = write_tree(tmp_path / "cext", {**CEXT, "src/cext/ext.c": "this is not C;\n"})
    before = snapshot(source)
    with pytest.raises(BuildError) as err:
        PythonBackend().build(make_ctx(tmp_path, source, python=host312))
    text = str(err.value)
    assert "build wheel failed" in text
    assert "pep517_hook.py" in text
    assert "last lines of the build log" in text
    assert "error" in text.split("last lines of the build log", 1)[1]
    assert snapshot(source) == before


def test_missing_build_requirement_names_the_module(tmp_path: Path, host312: Path) -> None:
    # No pyproject.toml: setuptools' legacy backend runs setup.py, which imports a module
    # the host prefix does not have.
    source = write_tree(
        tmp_path / "legacy",
        {"setup.py": "import no_such_build_helper\nfrom setuptools import setup\nsetup(name='legacy')\n"},
    )
    with pytest.raises(BuildError) as err:
        PythonBackend().build(make_ctx(tmp_path, source, python=host312))
    assert f"build backend {DEFAULT_BACKEND}" in (tmp_path / "build.log").read_text()
    assert "`no_such_build_helper`" in err.value.message
    assert err.value.key == "package.host-dependencies"
    assert "no-such-build-helper" in (err.value.hint or "")



# --------------------------------------------------------------------------- pure builds


def test_pure_wheel_becomes_noarch_python_with_entry_points(tmp_path: Path, host312: Path) -> None:
    source = write_tree(tmp_path / "purepkg", PURE)
    before = snapshot(source)
    ctx = make_ctx(tmp_path, source, python=host312)
    out = PythonBackend().build(ctx)
    assert out.noarch == "python"
    assert out.entry_points == ("purehello = purepkg.cli:main",)
    assert out.depends == ()
    assert out.imports == ("purepkg",)
    site = ctx.install_dir / "site-packages"
    assert (site / "purepkg" / "cli.py").is_file()
    assert sorted(p.name for p in ctx.install_dir.iterdir()) == ["site-packages"]
    check_record(ctx.install_dir, site, "purepkg-0.1.0.dist-info", noarch=True)
    assert snapshot(source) == before


def test_noarch_false_stages_a_pure_wheel_with_runnable_scripts(tmp_path: Path, host312: Path) -> None:
    source = write_tree(tmp_path / "purepkg", PURE)
    ctx = make_ctx(tmp_path, source, python=host312, config={"noarch": False})
    out = PythonBackend().build(ctx)
    assert out.noarch is None
    assert out.entry_points == ()
    assert out.depends == ("python_abi 3.12.* *_cp312",)
    script = ctx.install_dir / "bin" / "purehello"
    assert script.read_text().startswith("#!/usr/bin/env python3.12\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    site = site_packages(ctx)
    assert "../../../bin/purehello" in {
        row[0] for row in csv.reader(io.StringIO((site / "purepkg-0.1.0.dist-info" / "RECORD").read_text()))
    }
    assert run_python(host312, [str(script)], site, tmp_path) == "hello from purepkg"


def test_a_module_deleted_from_the_sources_is_not_shipped_by_the_next_build(
    tmp_path: Path, host312: Path
) -> None:
    source = write_tree(tmp_path / "purepkg", PURE)
    first = make_ctx(tmp_path, source, python=host312, name="first")
    PythonBackend().build(first)
    assert (first.install_dir / "site-packages" / "purepkg" / "extra.py").is_file()
    (source / "src" / "purepkg" / "extra.py").unlink()
    second = make_ctx(tmp_path, source, python=host312, build_dir=first.build_dir, name="second")
    PythonBackend().build(second)
    staged = second.install_dir / "site-packages" / "purepkg"
    assert (staged / "cli.py").is_file()
    assert not (staged / "extra.py").exists()
    assert "purepkg/extra.py" not in (staged.parent / "purepkg-0.1.0.dist-info" / "RECORD").read_text()


def test_in_tree_backend_runs_on_python38_with_config_settings(tmp_path: Path) -> None:
    if not PY38.is_file():
        pytest.skip(f"needs CPython 3.8 at {PY38}")
    source = write_tree(tmp_path / "inpkg", IN_TREE)
    before = snapshot(source)
    config = {
        "config-settings": {"value": "x", "cmake": {"build-type": "Debug"}, "flag": True},
        "extra-args": ["-Cfrom-extra=y", "-v", "--config-settings", "value=from-args"],
        "editable": True,
    }
    ctx = make_ctx(tmp_path, source, python=PY38, config=config)
    out = PythonBackend().build(ctx)
    assert out.noarch == "python"
    assert out.entry_points == ("inhello = inpkg:main",)
    assert out.imports == ("inpkg",)
    namespace: dict[str, Any] = {}
    exec((ctx.install_dir / "site-packages" / "inpkg" / "__init__.py").read_text(), namespace)
    assert namespace["BUILT_BY"] == "3.8"
    assert json.loads(namespace["SETTINGS"]) == {
        "cmake.build-type": "Debug",
        "flag": "true",
        "from-extra": "y",
        "value": "from-args",
    }
    assert any("editable" in note for note in out.notes)
    assert any("-v" in note for note in out.notes)
    # Importing the in-tree backend wrote its bytecode to the build directory, not beside it.
    assert snapshot(source) == before
    assert list((ctx.build_dir / "pycache").rglob("simple_backend*.pyc"))


# --------------------------------------------------------------------------- errors


def test_missing_backend_module_names_it_and_host_dependencies(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "nobackend",
        {
            "pyproject.toml": """
                [build-system]
                requires = ["no-such-backend"]
                build-backend = "no_such_backend_mod.build"
            """
        },
    )
    with pytest.raises(BuildError) as err:
        PythonBackend().build(make_ctx(tmp_path, source, python=Path(sys.executable)))
    assert "no_such_backend_mod.build" in err.value.message
    assert "module `no_such_backend_mod` is missing" in err.value.message
    assert err.value.key == "package.host-dependencies"
    assert err.value.file == MANIFEST
    assert "add `no-such-backend-mod` to [package.host-dependencies]" in (err.value.hint or "")


def test_no_host_python_is_an_error_naming_host_dependencies(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "purepkg", PURE)
    with pytest.raises(BuildError) as err:
        PythonBackend().build(make_ctx(tmp_path, source, python=None))
    assert err.value.key == "package.host-dependencies"
    assert "`python`" in (err.value.hint or "")


def test_backend_path_outside_the_source_tree_is_refused(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "p",
        {"pyproject.toml": '[build-system]\nbuild-backend = "b"\nbackend-path = ["../elsewhere"]\n'},
    )
    with pytest.raises(BuildError) as err:
        read_build_system(source)
    assert err.value.key == "build-system.backend-path"
    assert err.value.file == source / "pyproject.toml"


def test_build_system_defaults_to_setuptools_legacy(tmp_path: Path) -> None:
    assert read_build_system(tmp_path).backend == DEFAULT_BACKEND
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert read_build_system(tmp_path).backend == DEFAULT_BACKEND
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["hatchling"]\n')
    assert read_build_system(tmp_path).backend == DEFAULT_BACKEND


# --------------------------------------------------------------------------- configuration


def test_registered_under_the_pixi_name() -> None:
    backend = get_backend("pixi-build-python")
    assert isinstance(backend, PythonBackend)
    assert (backend.name, backend.installs_into_prefix) == ("pixi-build-python", False)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"noarch": "yes"}, "package.build.config.noarch"),
        ({"editable": 1}, "package.build.config.editable"),
        ({"env": ["A=1"]}, "package.build.config.env"),
        ({"env": {"A": {"nested": 1}}}, "package.build.config.env.A"),
        ({"config-settings": ["a=b"]}, "package.build.config.config-settings"),
        ({"config-settings": {"a": {"b": [{}]}}}, "package.build.config.config-settings.a.b"),
        ({"extra-args": "-Ca=b"}, "package.build.config.extra-args"),
        ({"extra-args": ["-Ca=b", "--prefix=/x"]}, "package.build.config.extra-args[1]"),
        ({"extra-args": ["novalue"]}, "package.build.config.extra-args[0]"),
        ({"extra-args": ["-C"]}, "package.build.config.extra-args[0]"),
        ({"compilers": ["c", 3]}, "package.build.config.compilers"),
    ],
)
def test_check_config_names_the_bad_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(BuildError) as err:
        PythonBackend().check_config(freeze(config), MANIFEST)
    assert err.value.key == key
    assert err.value.file == MANIFEST


def test_check_config_accepts_pixi_build_python_options() -> None:
    PythonBackend().check_config(
        freeze(
            {
                "noarch": False,
                "env": {"A": "1", "B": 2},
                "compilers": ["c", "cxx"],
                "extra-args": ["-Cbuilddir=x", "--no-build-isolation"],
                "config-settings": {"setup-args": ["-Da=b"], "cmake": {"build-type": "Debug"}},
                "editable": False,
                "debug-dir": "dbg",
                "extra-input-globs": ["*.c"],
                "ignore-pyproject-manifest": True,
                "ignore-pypi-mapping": True,
            }
        ),
        MANIFEST,
    )


def test_backend_families() -> None:
    assert backend_family("setuptools.build_meta:__legacy__") == "setuptools"
    assert backend_family("scikit_build_core.build") == "scikit-build-core"
    assert backend_family("mesonpy") == "meson-python"
    assert backend_family("maturin") == "maturin"
    assert backend_family("hatchling.build") == "other"
    assert provider_of("scikit_build_core.build") == "scikit-build-core"
    assert provider_of("mesonpy") == "meson-python"


def test_build_directories_and_profiles_become_config_settings(tmp_path: Path) -> None:
    assert default_config_settings("scikit-build-core", tmp_path, "dev") == {
        "build-dir": str(tmp_path / "skbuild"),
        "cmake.build-type": "Debug",
    }
    assert default_config_settings("scikit-build-core", tmp_path, "release") == {
        "build-dir": str(tmp_path / "skbuild")
    }
    assert default_config_settings("meson-python", tmp_path, "dev") == {
        "builddir": str(tmp_path / "meson"),
        "setup-args": ["-Dbuildtype=debug"],
    }
    assert default_config_settings("meson-python", tmp_path, "release") == {
        "builddir": str(tmp_path / "meson")
    }
    assert default_config_settings("setuptools", tmp_path, "dev") == {}
    assert default_config_settings("other", tmp_path, "release") == {}


def test_user_config_settings_win_and_argument_lists_append(tmp_path: Path) -> None:
    defaults = default_config_settings("meson-python", tmp_path, "dev")
    table = config_settings_table({"builddir": "mine", "setup-args": ["-Dbuildtype=release"]})
    assert merge_config_settings(defaults, table) == {
        "builddir": "mine",
        "setup-args": ["-Dbuildtype=debug", "-Dbuildtype=release"],
    }
    extra = parse_extra_args(["-Cbuilddir=fromargs", "-Ccompile-args=-j1", "-Ccompile-args=-v"])
    assert merge_config_settings(defaults, table, extra.settings) == {
        "builddir": "fromargs",
        "setup-args": ["-Dbuildtype=debug", "-Dbuildtype=release"],
        "compile-args": ["-j1", "-v"],
    }
    skb = default_config_settings("scikit-build-core", tmp_path, "dev")
    assert merge_config_settings(skb, {"cmake.build-type": "RelWithDebInfo"})["cmake.build-type"] == (
        "RelWithDebInfo"
    )


def test_extra_args_take_pip_config_settings_forms() -> None:
    parsed = parse_extra_args(
        ["-Ca=1", "--config-settings=b=2", "--config-setting", "c=3", "-C", "d=", "e=5", "-vv", "--no-deps"]
    )
    assert parsed.settings == (("a", "1"), ("b", "2"), ("c", "3"), ("d", ""), ("e", "5"))
    assert parsed.ignored == ("-vv", "--no-deps")


def test_config_settings_table_flattens_dotted_keys() -> None:
    assert config_settings_table({"cmake": {"build-type": "Debug", "args": ["-DA=1", 2]}, "n": 3}) == {
        "cmake.build-type": "Debug",
        "cmake.args": ["-DA=1", "2"],
        "n": "3",
    }


def test_setuptools_config_redirects_outputs_and_keeps_an_existing_file(tmp_path: Path) -> None:
    existing = "[build]\ncompiler = unix\n\n[build_ext]\nparallel = 2\n"
    text = setuptools_config(tmp_path / "50%" / "build", tmp_path / "egg", existing)
    parser = configparser.ConfigParser()  # interpolating, as distutils reads it
    parser.read_string(text)
    assert parser.get("build", "build_base") == str(tmp_path / "50%" / "build")
    assert parser.get("egg_info", "egg_base") == str(tmp_path / "egg")
    assert parser.get("build", "compiler") == "unix"
    assert parser.get("build_ext", "parallel") == "2"


# --------------------------------------------------------------------------- wheel installation


def make_wheel(directory: Path, name: str, members: Mapping[str, bytes | str]) -> Path:
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


SCHEMES_WHEEL = {
    "pkg/__init__.py": "",
    "pkg/tool.py": "def main():\n    return 0\n",
    "pkg-1.0.data/platlib/plat_mod.py": "X = 1\n",
    "pkg-1.0.data/scripts/tool": "#!python\nprint('tool')\n",
    "pkg-1.0.data/headers/pkg.h": "/* header */\n",
    "pkg-1.0.data/data/share/pkg/readme.txt": "data\n",
    "pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
    "pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "pkg-1.0.dist-info/top_level.txt": "pkg\nnot_shipped\n",
    "pkg-1.0.dist-info/entry_points.txt": (
        "[console_scripts]\npkg-cli = pkg.tool:main [extra]\n[gui_scripts]\npkg-gui = pkg.tool:main\n"
    ),
    "pkg-1.0.dist-info/RECORD": "stale,,\n",
}


def test_install_wheel_maps_every_scheme_into_the_prefix(tmp_path: Path) -> None:
    contents = inspect_wheel(make_wheel(tmp_path, "pkg-1.0-py3-none-any.whl", SCHEMES_WHEEL))
    assert not contents.pure  # platlib content
    assert contents.top_level == ("pkg",)
    assert contents.entry_points == ("pkg-cli = pkg.tool:main", "pkg-gui = pkg.tool:main")
    prefix = tmp_path / "prefix"
    install_wheel(contents, prefix, python_version="3.11")
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert (site / "pkg" / "tool.py").is_file()
    assert (site / "plat_mod.py").is_file()
    assert (prefix / "include" / "pkg.h").is_file()
    assert (prefix / "share" / "pkg" / "readme.txt").read_text() == "data\n"
    tool = prefix / "bin" / "tool"
    assert tool.read_text() == "#!/usr/bin/env python3.11\nprint('tool')\n"
    for script in ("pkg-cli", "pkg-gui", "tool"):
        assert stat.S_IMODE((prefix / "bin" / script).stat().st_mode) == 0o755
    cli = (prefix / "bin" / "pkg-cli").read_text()
    assert cli.startswith("#!/usr/bin/env python3.11\n")
    assert "from pkg.tool import main" in cli
    listed = check_record(prefix, site, "pkg-1.0.dist-info")
    assert "bin/pkg-cli" in listed
    assert (site / "pkg-1.0.dist-info" / "INSTALLER").read_text() == f"{INSTALLER}\n"


def test_stage_noarch_python_uses_the_noarch_layout(tmp_path: Path) -> None:
    members = {k: v for k, v in SCHEMES_WHEEL.items() if "platlib" not in k}
    contents = inspect_wheel(make_wheel(tmp_path, "pkg-1.0-py3-none-any.whl", members))
    assert contents.pure
    dest = tmp_path / "stage"
    stage_noarch_python(contents, dest)
    assert (dest / "site-packages" / "pkg" / "tool.py").is_file()
    assert (dest / "python-scripts" / "tool").read_text().startswith("#!/usr/bin/env python\n")
    assert not (dest / "bin").exists()  # entry points are package metadata for noarch: python
    listed = check_record(dest, dest / "site-packages", "pkg-1.0.dist-info", noarch=True)
    assert {"python-scripts/tool", "include/pkg.h", "share/pkg/readme.txt"} <= listed


def test_a_wheel_with_compiled_code_is_never_pure(tmp_path: Path) -> None:
    members = {**SCHEMES_WHEEL, "pkg/_speed.cpython-312-x86_64-linux-gnu.so": b"\x7fELF"}
    del members["pkg-1.0.data/platlib/plat_mod.py"]
    assert not inspect_wheel(make_wheel(tmp_path, "pkg-1.0-py3-none-any.whl", members)).pure


def test_unsafe_wheel_paths_are_refused(tmp_path: Path) -> None:
    members = {**SCHEMES_WHEEL, "pkg-1.0.data/data/../../escape.txt": "x"}
    contents = inspect_wheel(make_wheel(tmp_path, "pkg-1.0-py3-none-any.whl", members))
    with pytest.raises(BuildError, match="unsafe path"):
        install_wheel(contents, tmp_path / "prefix", python_version="3.12")
    assert not (tmp_path / "escape.txt").exists()


def test_top_level_names_without_top_level_txt() -> None:
    names = [
        "a/__init__.py",
        "b.py",
        "c.cpython-312-x86_64-linux-gnu.so",
        "ns/sub/mod.py",
        "datadir/readme.txt",
        "__pycache__/b.cpython-312.pyc",
        "x-1.0.data/purelib/d.py",
        "x-1.0.data/scripts/e.py",
        "x-1.0.dist-info/METADATA",
        "distutils-precedence.pth",
    ]
    assert top_level_names(names, "x-1.0.dist-info") == ("a", "b", "c", "d", "ns")


def test_python_abi_pins_the_interpreter_abi() -> None:
    assert python_abi_depend("3.12") == "python_abi 3.12.* *_cp312"
    assert python_abi_depend("3.13", "t") == "python_abi 3.13.* *_cp313t"


def test_entry_point_script_calls_nested_attributes() -> None:
    script = entry_point_script("x = pkg.mod:obj.attr", "python3.12")
    assert "from pkg.mod import obj\n" in script
    assert "sys.exit(obj.attr())" in script
