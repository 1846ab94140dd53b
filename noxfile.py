"""This repository's own nox sessions, and one session per cell of matrices/*.toml.

``nox`` (or ``nox -s lint tests``) runs ruff and the test suite;
``nox -s "test(py312-cu13)" -- -k name`` builds, installs and tests one cell of
the demo matrix; ``nox -l -t gpu`` lists the cells that need a GPU.
"""

from __future__ import annotations

import sys

import nox

import harness.nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on two workers."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the code."""
    session.install("ruff")
    session.run("ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")


@nox.session(venv_backend="none")
def premerge(session: nox.Session) -> None:
    """Every cell this machine can run, in parallel (`nox -s premerge -- -j 4 matrices/demo.toml`)."""
    session.run(sys.executable, "-m", "harness", "premerge", *session.posargs, external=True)


harness.nox.register_matrix_sessions()
