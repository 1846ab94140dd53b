"""Warm re-run overhead of the harness beside tox and nox, on one pure-Python project.

Run: python benchmarks/peers.py [--runs 7] [--python 3.12]

A small pure-Python package (src layout, setuptools, 40 tests) is tested
three ways, each re-run warm after a first run:

- harness: `harness test --from pixi.toml default` (its own conda prefix on the offline channel,
  the package built and installed as a conda package),
- tox: `tox -e py` (its own virtualenv, reused; tox rebuilds and reinstalls the package each run),
- nox: `nox -R -s tests` (its own virtualenv, reused, installs skipped).

Each tool's overhead is its median wall time minus the median of the same
`python -m pytest tests -q` run directly in that tool's environment.  The
harness's should be the lowest.  Needs tox, virtualenv and nox (the dev extra)
and a CPython of the given version on this machine.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warm_rerun import compile_harness, timed

TESTS = "\n".join(f"def test_add_{i}():\n    assert add({i}, 1) == {i + 1}\n" for i in range(40))

FILES = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "purepkg"
        version = "0.1.0"
        """,
    "src/purepkg/__init__.py": "def add(a, b):\n    return a + b\n",
    "tests/test_purepkg.py": "from purepkg import add\n\n" + TESTS,
    "pixi.toml": """
        [workspace]
        channels = ["offline"]
        platforms = ["linux-64"]
        preview = ["pixi-build"]

        [dependencies]
        python = "{python}.*"
        pytest = "*"
        purepkg = {{ path = "." }}

        [package]
        name = "purepkg"
        version = "0.1.0"

        [package.build]
        backend = {{ name = "pixi-build-python", version = "*" }}

        [package.host-dependencies]
        python = "*"
        setuptools = "*"

        [package.run-dependencies]
        python = "*"

        [tasks]
        test = "python -m pytest tests -q"
        """,
    "tox.ini": """
        [tox]
        env_list = py

        [testenv]
        deps = pytest
        commands = python -m pytest tests -q
        """,
    "noxfile.py": """
        import nox

        @nox.session(python="{python}")
        def tests(session):
            session.install(".", "pytest")
            session.run("python", "-m", "pytest", "tests", "-q")
        """,
}


def write_project(root: Path, python: str) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(text).lstrip()
        if rel in ("pixi.toml", "noxfile.py"):
            text = text.format(python=python)
        path.write_text(text)


def find_interpreter(version: str) -> Path:
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    if found:
        return Path(found[-1])
    which = shutil.which(f"python{version}")
    if which:
        return Path(which)
    sys.exit(f"no CPython {version} on this machine")


def run_ok(argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{argv} failed:\n{proc.stdout.decode()[-3000:]}\n{proc.stderr.decode()[-3000:]}")


def medians(runs: int, pairs: dict[str, tuple[list[str], dict[str, str], Path]]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(runs):
        for name, (argv, env, cwd) in pairs.items():
            times[name].append(timed(argv, env=env, cwd=cwd))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default="3.12")
    args = parser.parse_args()

    interpreter = find_interpreter(args.python)
    compile_harness()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "purepkg"
        write_project(root, args.python)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(interpreter.parent), str(bindir), env.get("PATH", "")])
        env["HARNESS_CACHE_DIR"] = str(Path(tmp) / "harness-cache")
        env.pop("VIRTUAL_ENV", None)

        harness_argv = [str(Path(sys.executable).parent / "harness"), "test", "--from", "pixi.toml", "default", "-q"]
        tox_argv = [str(bindir / "tox"), "-e", "py", "-q"]
        nox_argv = [str(bindir / "nox"), "-R", "-s", "tests"]
        for argv in (harness_argv, tox_argv, [str(bindir / "nox"), "-s", "tests"]):
            run_ok(argv, cwd=root, env=env)  # first runs: create the environments
        time.sleep(2.1)  # past the racy window: the next harness run records trusted inputs
        run_ok(harness_argv, cwd=root, env=env)

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        os.environ.clear()
        os.environ.update(env)  # the record's activation is keyed by this environment's PATH
        from harness.warm import Invocation
        from harness.warmstart import command_argv, command_env, read_snapshot, stale

        os.chdir(root)  # the snapshot is keyed by the directory the command ran in
        text = Invocation(("pixi.toml",), ("default",), "skip").material()
        snapshot = read_snapshot(text)
        assert snapshot is not None, "the harness left no warm-start snapshot"
        cell = snapshot["cells"][0]
        harness_direct_env = command_env(cell, "test")
        pytest_argv = ["-m", "pytest", "tests", "-q"]
        tox_python = root / ".tox" / "py" / "bin" / "python"
        nox_python = next((root / ".nox").glob("tests*")) / "bin" / "python"
        venv_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH",)}

        result = medians(
            args.runs,
            {
                "harness": (harness_argv, env, root),
                "harness direct": (command_argv(cell, "test"), harness_direct_env, cell["plan"]["cwd"]),
                "tox": (tox_argv, env, root),
                "tox direct": ([str(tox_python), *pytest_argv], venv_env, root),
                "nox -R": (nox_argv, env, root),
                "nox direct": ([str(nox_python), *pytest_argv], venv_env, root),
            },
        )
        snapshot = read_snapshot(text)
        reason = "no snapshot" if snapshot is None else stale(snapshot)
    print(f"pure-Python project, 40 tests, CPython {args.python}; {args.runs} rounds, medians")
    print(f"  harness warm start after the rounds: {'valid' if reason is None else 'NOT taken: ' + reason}")
    print(f"  {'tool':<10} {'warm run':>10} {'direct':>10} {'overhead':>10} {'ratio':>7}")
    for tool in ("harness", "tox", "nox -R"):
        total = result[tool]
        direct = result[f"{tool.split()[0]} direct"]
        print(
            f"  {tool:<10} {total * 1000:8.0f}ms {direct * 1000:8.0f}ms "
            f"{(total - direct) * 1000:+8.0f}ms {total / direct:7.2f}"
        )
    os._exit(0)


if __name__ == "__main__":
    main()
