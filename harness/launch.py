"""Starting a cell's test command: its argv, its environment, and the process.

Kept apart from :mod:`harness.run` (which reads what the command did) and
free of heavy imports, so that a warm start can launch the tests first and
load everything it needs afterwards, while the tests already run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.errors import RunError

_DROP_EXACT = {
    "CONDA_PREFIX",
    "CONDA_SHLVL",
    "CONDA_DEFAULT_ENV",
    "CONDA_PROMPT_MODIFIER",
    "CONDA_EXE",
    "CONDA_PYTHON_EXE",
    "_CE_CONDA",
    "_CE_M",
    "VIRTUAL_ENV",
    "VIRTUAL_ENV_PROMPT",
    "PYTHONHOME",
    "PYTHONPATH",
    "__PYVENV_LAUNCHER__",
}
_DROP_PREFIXES = ("CONDA_PREFIX_", "PIXI_")
_VAR = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|%([A-Za-z_][A-Za-z0-9_]*)%"
)


def clean_base_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` without any activated conda/pixi/virtual environment, PATH included."""
    environ = dict(os.environ if environ is None else environ)
    foreign = [environ.get("CONDA_PREFIX"), environ.get("VIRTUAL_ENV")]
    foreign += [v for k, v in environ.items() if k.startswith("CONDA_PREFIX_")]
    if sys.prefix != sys.base_prefix:  # the harness's own virtualenv
        foreign.append(sys.prefix)
    bins = {os.path.normpath(os.path.join(p, "bin")) for p in foreign if p}
    path = [
        p
        for p in environ.get("PATH", "").split(os.pathsep)
        if p and os.path.normpath(p) not in bins
    ]
    env = {
        k: v
        for k, v in environ.items()
        if k not in _DROP_EXACT and not k.startswith(_DROP_PREFIXES)
    }
    env["PATH"] = os.pathsep.join(path) or os.defpath
    return env


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}`` and ``%VAR%`` from ``env`` without a shell.

    Unknown ``$VAR`` expand to nothing, as in a shell; an unknown ``%VAR%`` is
    left as written, as ``cmd`` does (so ``50%`` stays ``50%``).
    """

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name:
            return env.get(name, "")
        name = match.group(3)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, value)

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_UNQUOTED_SPECIAL = set("|&;<>()$`*?[{~#\n")


def needs_shell(command: str) -> bool:
    """Whether ``command`` uses shell syntax that a plain ``shlex.split`` would get wrong.

    Operators, redirections, expansions (``$VAR``, backquotes, globs, ``~``),
    comments and leading ``VAR=value`` assignments all need a shell.  Quoted
    text is literal for a shell too, so only unquoted characters count (and
    ``$``/backquote inside double quotes).  A false positive is harmless: the
    shell runs the same words.
    """
    quote = ""
    escaped = False
    for char in command:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote == "'":
            quote = "" if char == "'" else quote
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char in "$`":
                return True
        elif char in "'\"":
            quote = char
        elif char in _UNQUOTED_SPECIAL:
            return True
    try:
        words = shlex.split(command)
    except ValueError:
        return True  # unbalanced quotes: let the shell report it in its own words
    return bool(words) and _ASSIGNMENT.match(words[0]) is not None


def test_argv(command: str, extra_args: Sequence[str]) -> list[str]:
    """The argv that runs ``command`` with ``extra_args`` appended.

    A plain command is split like a shell would split it and run directly. A
    command with shell syntax runs under ``bash -c``; the extra arguments are
    passed as positional parameters and expanded with ``"$@"`` at the *end* of
    the command, so ``pytest -x && echo ok`` plus ``-k fast`` runs
    ``pytest -x && echo ok -k fast``: write the test tool last in such a
    command.
    """
    if not command.strip():
        raise ValueError("empty test command")
    if needs_shell(command):
        return ["bash", "-c", command + ' "$@"', "bash", *extra_args]
    return [*shlex.split(command), *extra_args]


test_argv.__test__ = False  # type: ignore[attr-defined]


def test_env(env: Mapping[str, str], junit_path: Path, pycache: Path | None = None) -> dict[str, str]:
    """``env`` plus what makes any pytest inside write JUnit and leave the source tree alone.

    With ``pycache``, bytecode (the prefix's packages', the tests' and
    pytest's rewritten asserts) is written under that directory instead of
    beside the sources (``PYTHONPYCACHEPREFIX``): conda installs noarch
    packages without bytecode, and recompiling pytest at every run costs
    more than everything else a warm run does.  Without it, no bytecode is
    written at all.
    """
    out = dict(env)
    if pycache is not None:
        out.pop("PYTHONDONTWRITEBYTECODE", None)
        out["PYTHONPYCACHEPREFIX"] = str(pycache)
    else:
        out["PYTHONDONTWRITEBYTECODE"] = "1"
    ours = f"--junitxml={shlex.quote(str(junit_path))} -p no:cacheprovider"
    existing = out.get("PYTEST_ADDOPTS", "").strip()
    out["PYTEST_ADDOPTS"] = f"{existing} {ours}" if existing else ours
    return out


test_env.__test__ = False  # type: ignore[attr-defined]


class Launched:
    """A started test command: the process, its argv and when it started."""

    __slots__ = ("argv", "proc", "started")

    def __init__(self, proc: subprocess.Popen[bytes], argv: list[str], started: float) -> None:
        self.proc = proc
        self.argv = argv
        self.started = started


def launch(
    cell_id: str,
    command: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    extra_args: Sequence[str] = (),
    junit_path: Path,
    log_path: Path | None = None,
    pycache: Path | None = None,
) -> Launched:
    """Start ``command`` in ``cwd``; its output goes to a pipe that :func:`harness.run.run_tests` reads.

    ``junit_path`` is removed first, so that a JUnit file left by an earlier
    run is never read as this run's.
    """
    if not command.strip():
        raise RunError(
            f"cell {cell_id} has an empty test command",
            hint="set the test command in the manifest or matrix file",
        )
    argv = test_argv(command, extra_args)
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.unlink(missing_ok=True)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = test_env(env, junit_path, pycache)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise RunError(
                f"cannot run the tests of cell {cell_id}: working directory {cwd} does not exist",
                hint="check the package's source path",
            ) from None
        raise RunError(
            f"cannot run the tests of cell {cell_id}: {argv[0]} not found "
            f"(command: {shlex.join(argv)})",
            hint=f"add the package that provides {Path(argv[0]).name!r} to the test "
            "environment's dependencies, or run it through python -m",
        ) from None
    except PermissionError as exc:
        raise RunError(
            f"cannot run the tests of cell {cell_id}: {exc.strerror or exc} "
            f"(command: {shlex.join(argv)})",
            hint="check that the test command names an executable file",
        ) from None
    return Launched(proc, argv, started)
