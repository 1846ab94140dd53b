"""Starting a cell's test command: its argv, its environment, and the process.

Kept apart from :mod:`harness.run` (which reads what the command did) and
free of heavy imports, so that a warm start can launch the tests first and
load everything it needs afterwards, while the tests already run.
"""

from __future__ import annotations

import _signal
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence
    from pathlib import Path

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
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


class scoped_environ:
    """Set (a value) or unset (``None``) variables of ``os.environ``; restore them on exit.

    For work that runs in this process but reads the environment as a child
    would: a warm test run inside nox, rattler-build's virtual-package detection.
    """

    def __init__(self, changes: Mapping[str, str | None]) -> None:
        self.changes = dict(changes)
        self.saved: dict[str, str | None] = {}

    @staticmethod
    def _apply(values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> None:
        self.saved = {name: os.environ.get(name) for name in self.changes}
        self._apply(self.changes)

    def __exit__(self, *exc: object) -> None:
        self._apply(self.saved)


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
    left as written, as ``cmd`` does (so ``50%`` stays ``50%``).  Scanned by
    hand rather than with :mod:`re`, whose import a warm start cannot afford.
    """
    if "$" not in value and "%" not in value:
        return value
    out: list[str] = []
    i, end = 0, len(value)
    while i < end:
        char = value[i]
        if char == "$" and i + 1 < end:
            braced = value[i + 1] == "{"
            start = i + 2 if braced else i + 1
            stop = _name_end(value, start)
            if stop > start and (not braced or (stop < end and value[stop] == "}")):
                out.append(env.get(value[start:stop], ""))
                i = stop + 1 if braced else stop
                continue
        elif char == "%":
            stop = _name_end(value, i + 1)
            if stop > i + 1 and stop < end and value[stop] == "%":
                name = value[i + 1 : stop]
                out.append(env.get(name, value[i : stop + 1]))
                i = stop + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _name_end(value: str, start: int) -> int:
    """Where the variable name starting at ``start`` ends (``start`` itself if there is none)."""
    if start >= len(value) or value[start] not in _NAME_START:
        return start
    stop = start + 1
    while stop < len(value) and value[stop] in _NAME_CHARS:
        stop += 1
    return stop

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
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return True  # unbalanced quotes: let the shell report it in its own words
    if not words:
        return False
    name, eq, _ = words[0].partition("=")
    return bool(eq) and _name_end(name, 0) == len(name) > 0


def test_argv(command: str, extra_args: Sequence[str]) -> list[str]:
    """The argv that runs ``command`` with ``extra_args`` appended.

    A plain command is split like a shell would split it and run directly. A
    command with shell syntax runs under ``bash -c``; the extra arguments are
    passed as positional parameters and expanded with ``"$@"`` at the *end* of
    the command, so ``pytest -x && echo ok`` plus ``-k fast`` runs
    ``pytest -x && echo ok -k fast``: write the test tool last in such a
    command.
    """
    import shlex

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
    ours = f"--junitxml={quote(str(junit_path))} -p no:cacheprovider"
    existing = out.get("PYTEST_ADDOPTS", "").strip()
    out["PYTEST_ADDOPTS"] = f"{existing} {ours}" if existing else ours
    return out


test_env.__test__ = False  # type: ignore[attr-defined]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")


def quote(word: str) -> str:
    """:func:`shlex.quote` without importing :mod:`shlex` (and :mod:`re`)."""
    if not word:
        return "''"
    if all(c in _SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


class Launched:
    """A started test command: the process, its argv and when it started."""

    __slots__ = ("argv", "proc", "started")

    def __init__(self, proc: subprocess.Popen[bytes] | Spawned, argv: list[str], started: float) -> None:
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
    import shlex
    import subprocess
    from pathlib import Path

    from harness.errors import RunError

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


# -- the warm start's spawn ----------------------------------------------------------------------


class Spawned:
    """A child started by :func:`spawn`: the part of :class:`subprocess.Popen` the harness uses."""

    __slots__ = ("pid", "returncode", "stdout")

    def __init__(self, pid: int, stdout_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = open(stdout_fd, "rb", buffering=0)  # noqa: SIM115 (closed by its reader)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            if self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(_signal.SIGKILL)


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: str) -> Spawned:
    """Start ``argv`` in ``cwd`` as :class:`subprocess.Popen` would, output to a pipe, for a warm start.

    :mod:`subprocess` costs a warm run more than its whole remaining work, so
    the child is started with ``posix_spawn`` and the same guarantees: the
    program is looked up on the *child's* ``PATH``; no descriptor but the
    standard three reaches it; ``SIGPIPE`` and ``SIGXFSZ``, which Python
    ignores, are default again.  ``posix_spawn`` cannot change directory, so
    this process enters ``cwd`` around the call: only for a single-threaded
    caller (the command line), never for a library one.  Errors are
    :class:`OSError` as from ``Popen``.
    """
    program = _which(argv[0], env)
    _close_on_exec_all()
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    read_end, write_end = os.pipe()
    try:
        os.chdir(cwd)
        try:
            pid = os.posix_spawn(
                program,
                list(argv),
                dict(env),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, write_end, 1),
                    (os.POSIX_SPAWN_DUP2, write_end, 2),
                ],
                setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
            )
        finally:
            os.fchdir(here)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
        os.close(here)
    return Spawned(pid, read_end)


def _which(program: str, env: Mapping[str, str]) -> str:
    """``program`` on ``env``'s ``PATH``, as ``Popen`` finds it (a name with a slash as it is)."""
    if os.sep in program:
        return program
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise FileNotFoundError(2, "No such file or directory", program)


def _close_on_exec_all() -> None:
    """Make every descriptor above the standard three close on exec (``Popen``'s ``close_fds``)."""
    for listing in ("/proc/self/fd", "/dev/fd"):  # Linux, then macOS and the BSDs
        try:
            fds = [int(name) for name in os.listdir(listing)]
            break
        except (OSError, ValueError):
            continue
    else:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                continue  # the listing's own descriptor, already closed
