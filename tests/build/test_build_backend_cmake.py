"""The ``pixi-build-cmake`` backend: real CMake builds of a tiny C project, out of tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _native_fixtures import make_context, snapshot, write_tree

from harness.build.backends import get_backend
from harness.build.backends.cmake import CMakeBackend, read_cache_entry
from harness.errors import BuildError

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("cc") is None,
    reason="needs cmake and a C compiler",
)

PROJECT = {
    "CMakeLists.txt": """
        cmake_minimum_required(VERSION 3.16)
        project(greet C)
        set(GREETING "hello" CACHE STRING "what the greeter says")
        add_library(greet SHARED src/greet.c)
        add_library(greet_static STATIC src/greet.c)
        foreach(lib greet greet_static)
          target_include_directories(${lib} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
          target_compile_definitions(${lib} PRIVATE GREETING="${GREETING}")
        endforeach()
        add_executable(greeter src/main.c)
        target_link_libraries(greeter PRIVATE greet_static)
        add_executable(greeter_shared src/main.c)
        target_link_libraries(greeter_shared PRIVATE greet)
        file(GENERATE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/greeting.txt CONTENT "${GREETING}\\n")
        file(GENERATE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/build-type.txt CONTENT "$<CONFIG>\\n")
        install(TARGETS greet greet_static greeter greeter_shared)
        install(FILES include/greet.h DESTINATION include)
        install(FILES ${CMAKE_CURRENT_BINARY_DIR}/greeting.txt
                      ${CMAKE_CURRENT_BINARY_DIR}/build-type.txt DESTINATION share/greet)
    """,
    "include/greet.h": """
        const char *greet(void);
    """,
    "src/greet.c": """
        #include "greet.h"
        const char *greet(void) { return GREETING; }
    """,
    "src/main.c": """
        #include <stdio.h>
        #include "greet.h"
        int main(void) { puts(greet()); return 0; }
    """,
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", PROJECT)


def object_mtimes(build_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(build_dir)): p.stat().st_mtime_ns for p in build_dir.rglob("*.o")}


def new_log(log: Path, start: int) -> str:
    return log.read_text(encoding="utf-8")[start:]


def test_registered_under_pixi_name() -> None:
    backend = get_backend("pixi-build-cmake")
    assert isinstance(backend, CMakeBackend)
    assert backend.installs_into_prefix is False


def test_release_build_installs_header_libraries_and_executable(
    tmp_path: Path, source: Path
) -> None:
    before = snapshot(source)
    ctx = make_context(tmp_path, source, profile_base="release")

    out = CMakeBackend().build(ctx)

    assert out.package is None
    staged = {
        str(p.relative_to(ctx.install_dir)) for p in ctx.install_dir.rglob("*") if p.is_file()
    }
    assert {"include/greet.h", "lib/libgreet.so", "lib/libgreet_static.a", "bin/greeter"} <= staged
    run = subprocess.run(
        [ctx.install_dir / "bin/greeter"], capture_output=True, text=True, check=True
    )
    assert run.stdout == "hello\n"
    # Linked to lib/libgreet.so: found through the relative run path, with no LD_LIBRARY_PATH.
    run = subprocess.run(
        [ctx.install_dir / "bin/greeter_shared"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert (run.returncode, run.stdout) == (0, "hello\n"), run.stderr
    cache = ctx.build_dir / "cmake" / "CMakeCache.txt"
    assert read_cache_entry(cache, "CMAKE_BUILD_TYPE") == "Release"
    assert read_cache_entry(cache, "CMAKE_INSTALL_PREFIX") == str(ctx.install_dir)
    assert read_cache_entry(cache, "CMAKE_GENERATOR") == "Ninja"
    assert (ctx.install_dir / "share/greet/build-type.txt").read_text() == "Release\n"
    assert "--parallel 2" in ctx.log_path.read_text()
    assert snapshot(source) == before, "the build wrote into the source tree"


def test_dev_profile_builds_debug_and_a_build_type_change_reconfigures_the_same_dir(
    tmp_path: Path, source: Path
) -> None:
    build_dir = tmp_path / "build"
    dev = make_context(tmp_path, source, profile_base="dev", build_dir=build_dir)
    CMakeBackend().build(dev)
    cache = build_dir / "cmake" / "CMakeCache.txt"
    assert read_cache_entry(cache, "CMAKE_BUILD_TYPE") == "Debug"
    assert (dev.install_dir / "share/greet/build-type.txt").read_text() == "Debug\n"
    debug_objects = object_mtimes(build_dir)

    release = make_context(
        tmp_path,
        source,
        profile_base="dev",
        config={"build-type": "MinSizeRel"},
        build_dir=build_dir,
        install_dir=tmp_path / "install2",
    )
    CMakeBackend().build(release)
    assert read_cache_entry(cache, "CMAKE_BUILD_TYPE") == "MinSizeRel"
    assert (release.install_dir / "share/greet/build-type.txt").read_text() == "MinSizeRel\n"
    rebuilt = object_mtimes(build_dir)
    assert rebuilt.keys() == debug_objects.keys()
    assert all(rebuilt[k] != debug_objects[k] for k in rebuilt), "new flags must recompile"


def test_extra_args_reach_cmake(tmp_path: Path, source: Path) -> None:
    ctx = make_context(tmp_path, source, config={"extra-args": ["-DGREETING=hi"]})
    CMakeBackend().build(ctx)
    assert (ctx.install_dir / "share/greet/greeting.txt").read_text() == "hi\n"
    run = subprocess.run(
        [ctx.install_dir / "bin/greeter"], capture_output=True, text=True, check=True
    )
    assert run.stdout == "hi\n"


def test_second_build_of_unchanged_sources_compiles_nothing(tmp_path: Path, source: Path) -> None:
    build_dir = tmp_path / "build"
    first = make_context(tmp_path, source, build_dir=build_dir)
    CMakeBackend().build(first)
    objects = object_mtimes(build_dir)
    assert len(objects) == 4

    start = first.log_path.stat().st_size
    # A fresh, empty staging directory each time, as the driver gives.
    second = make_context(tmp_path, source, build_dir=build_dir, install_dir=tmp_path / "again")
    CMakeBackend().build(second)

    assert object_mtimes(build_dir) == objects
    assert "ninja: no work to do." in new_log(second.log_path, start)
    assert (second.install_dir / "bin/greeter").is_file()
    assert (second.install_dir / "include/greet.h").is_file()


def test_changed_source_recompiles_only_what_depends_on_it(tmp_path: Path, source: Path) -> None:
    build_dir = tmp_path / "build"
    CMakeBackend().build(make_context(tmp_path, source, build_dir=build_dir))
    objects = object_mtimes(build_dir)

    (source / "src/main.c").write_text(
        '#include <stdio.h>\n#include "greet.h"\nint main(void) { printf("%s!\\n", greet()); }\n'
    )
    ctx = make_context(tmp_path, source, build_dir=build_dir, install_dir=tmp_path / "again")
    CMakeBackend().build(ctx)

    after = object_mtimes(build_dir)
    changed = {k for k in after if after[k] != objects[k]}
    assert sorted(Path(k).name for k in changed) == ["main.c.o", "main.c.o"]
    run = subprocess.run([ctx.install_dir / "bin/greeter"], capture_output=True, text=True)
    assert run.stdout == "hello!\n"


def test_compile_error_names_the_command_and_the_compiler_error(
    tmp_path: Path, source: Path
) -> None:
    (source / "src/greet.c").write_text("const char *greet(void) { return undeclared_name; }\n")
    ctx = make_context(tmp_path, source)

    with pytest.raises(BuildError) as info:
        CMakeBackend().build(ctx)

    text = str(info.value)
    assert "build failed: `" in text and " --build " in text
    assert "greet.c:1:" in text and "error:" in text and "undeclared_name" in text
    assert info.value.file == ctx.manifest


def test_a_tree_configured_with_another_generator_is_started_afresh(
    tmp_path: Path, source: Path
) -> None:
    cmake_dir = tmp_path / "build" / "cmake"
    subprocess.run(
        ["cmake", "-S", source, "-B", cmake_dir, "-G", "Unix Makefiles"],
        check=True,
        capture_output=True,
    )
    ctx = make_context(tmp_path, source)

    CMakeBackend().build(ctx)

    assert read_cache_entry(cmake_dir / "CMakeCache.txt", "CMAKE_GENERATOR") == "Ninja"
    assert "starting" in ctx.log_path.read_text() and "afresh" in ctx.log_path.read_text()


def test_missing_cmake_is_a_build_error(tmp_path: Path, source: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    ctx = make_context(tmp_path, source, env={"PATH": str(empty)})
    with pytest.raises(BuildError, match="cmake") as info:
        CMakeBackend().build(ctx)
    assert info.value.hint and "build-dependencies" in info.value.hint


def test_cmake_from_the_build_prefix_comes_first(tmp_path: Path, source: Path) -> None:
    prefix_bin = tmp_path / "build-prefix" / "bin"
    prefix_bin.mkdir(parents=True)
    marker = tmp_path / "wrapper-used"
    wrapper = prefix_bin / "cmake"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexec {shutil.which("cmake")} "$@"\n')
    wrapper.chmod(0o755)
    path = f"{prefix_bin}{os.pathsep}{os.environ['PATH']}"
    ctx = make_context(tmp_path, source, build_prefix=prefix_bin.parent, env={"PATH": path})

    CMakeBackend().build(ctx)

    calls = marker.read_text().splitlines()
    assert len(calls) == 3
    assert calls[1].startswith("--build") and calls[2].startswith("--install")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"build-type": 3}, "package.build.config.build-type"),
        ({"build-type": ""}, "package.build.config.build-type"),
        ({"extra-args": "-DX=1"}, "package.build.config.extra-args"),
        ({"extra-args": ["-DX=1", 2]}, "package.build.config.extra-args"),
    ],
)
def test_bad_configuration_names_the_key(config: dict[str, object], key: str) -> None:
    manifest = Path("/project/pixi.toml")
    with pytest.raises(BuildError) as info:
        CMakeBackend().check_config(config, manifest)
    assert info.value.key == key
    assert info.value.file == manifest
    assert info.value.hint


def test_custom_build_types_and_other_keys_are_accepted() -> None:
    CMakeBackend().check_config(
        {"build-type": "Coverage", "extra-args": ("-DA=1",), "env": {"X": "1"}}, None
    )


def test_configure_arguments_carry_host_prefix_and_python(tmp_path: Path, source: Path) -> None:
    host = tmp_path / "host"
    python = host / "bin" / "python"
    ctx = make_context(
        tmp_path, source, host_prefix=host, python=python, config={"extra-args": ["-DZ=1"]}
    )
    args = CMakeBackend().configure_args(ctx, ctx.build_dir / "cmake", ninja=False)
    assert "-G" not in args
    assert f"-DCMAKE_PREFIX_PATH={host}" in args
    assert f"-DPython_EXECUTABLE={python}" in args
    assert f"-DPython3_EXECUTABLE={python}" in args
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib" in args
    assert "-DCMAKE_INSTALL_LIBDIR=lib" in args
    assert args[-1] == "-DZ=1", "extra-args come last so they can override"
