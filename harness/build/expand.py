"""Expanding ``$VAR``, ``${VAR}``, ``%VAR%`` and ``$(nproc)`` in backend configuration, without a shell.

Manifests carry values such as ``"$PREFIX/bin/nvcc"``, ``'%PREFIX%\\Library'``
or ``"$(nproc)"`` (the seed's cupy manifest has all three).  pixi hands
them to a shell; the harness expands them itself so that a value means the
same on every runner and nothing can execute: ``$(nproc)`` is the CPU count,
any other command substitution is an error that names the key.  A variable
the build environment does not define expands to the empty string, as in a
shell.  ``$$`` is a literal ``$``.

Expansion is one pass: a value that a variable brings in is never expanded
again, so ``$X`` with ``X = "$(touch x)"`` yields that text, and backquotes
stay literal.  Two kinds of configuration are not expanded here at all:

* a value that *is* a shell program (the script backend's ``script``): bash
  expands it when it runs, from the build environment, as conda-build does;
  expanding it first would splice variable values into the program's text;
* variable *names* through which bash runs code it finds in its environment
  (``BASH_ENV`` is expanded and sourced, ``BASH_FUNC_*`` define functions,
  ``PS4`` is expanded under ``SHELLOPTS=xtrace``): they are refused, in
  build, activation and matrix environments alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import BuildError, format_key

_TOKEN = re.compile(
    r"\$\$"  # literal $
    r"|\$\((?P<cmd>[^)]*)\)"  # $(command)
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|%(?P<win>[A-Za-z_][A-Za-z0-9_]*)%"
)
_UNCLOSED = re.compile(r"\$\((?![^)]*\))|\$\{(?![A-Za-z_][A-Za-z0-9_]*\})")
#: Configuration keys whose values are shell programs, run by bash with the build environment.
SHELL_PROGRAM_KEYS = frozenset({"script"})
#: Variables bash reads code from: refused in every environment a configuration sets.
SHELL_CODE_VARIABLES = frozenset({"BASH_ENV", "PS4", "SHELLOPTS"})
SHELL_FUNCTION_PREFIX = "BASH_FUNC_"
ENV_HINT = ("use a plain variable name and value; code that must run before the build or the "
            "tests belongs in the build script or the test command")


def env_name_problem(name: str) -> str | None:
    """``None`` when ``name`` may be set in a build, activation or matrix environment, else why not."""
    if not name:
        return "an environment variable needs a name"
    if "=" in name or "\0" in name:
        return f"{name!r} cannot be an environment variable name ('=' and NUL are not allowed)"
    if name in SHELL_CODE_VARIABLES or name.startswith(SHELL_FUNCTION_PREFIX):
        return (f"{name} cannot be set from configuration: bash runs code it finds in this "
                "variable, and configuration never runs commands")
    return None


def env_value_problem(value: str) -> str | None:
    """``None`` when ``value`` can be an environment variable's value (no NUL), else why not."""
    if "\0" in value:
        return "an environment variable's value cannot hold a NUL character"
    return None


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, as ``nproc`` reports it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def expand_text(
    text: str,
    env: Mapping[str, str],
    *,
    key: Sequence[str | int] | str,
    manifest: Path | None = None,
    nproc: int | None = None,
) -> str:
    """``text`` with variables and ``$(nproc)`` replaced; :class:`BuildError` for anything else."""
    bad = _UNCLOSED.search(text)
    if bad:
        rest = text[bad.start():]
        what = (f"unterminated {bad.group(0)!r}" if bad.group(0) == "$(" or "}" not in rest
                else f"`{rest[:rest.index('}') + 1]}` is not supported (only `${{NAME}}`)")
        raise BuildError(
            f"{what} in {text!r}",
            file=manifest,
            key=key,
            hint="close it: `${NAME}` or `$(nproc)`; write `$$` for a literal `$`",
        )

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        cmd = match.group("cmd")
        if cmd is not None:
            if cmd.strip() == "nproc":
                return str(nproc if nproc is not None else cpu_count())
            kind = "arithmetic expansion" if cmd.startswith("(") else "command substitution"
            raise BuildError(
                f"{kind} `{match.group(0)}` is not supported in {text!r}",
                file=manifest,
                key=key,
                hint="only `$(nproc)` is expanded (to the CPU count); the harness never runs a "
                "shell to expand configuration",
            )
        name = match.group("braced") or match.group("bare") or match.group("win")
        return env.get(name, "")

    return _TOKEN.sub(replace, text)


def expand_config(
    value: Any,
    env: Mapping[str, str],
    *,
    key: Sequence[str | int] = ("package", "build", "config"),
    manifest: Path | None = None,
    nproc: int | None = None,
) -> Any:
    """Expand every string inside ``value`` (tables and arrays recursively); keys stay as written.

    A shell program (``package.build.config.script``) is returned as written:
    bash expands its variables itself, from the build environment.
    """
    if len(key) == 4 and tuple(key[:3]) == ("package", "build", "config") and key[3] in SHELL_PROGRAM_KEYS:
        return value
    if isinstance(value, str):
        return expand_text(value, env, key=format_key(list(key)) or "", manifest=manifest, nproc=nproc)
    if isinstance(value, Mapping):
        return {
            k: expand_config(v, env, key=(*key, k), manifest=manifest, nproc=nproc)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            expand_config(v, env, key=(*key, i), manifest=manifest, nproc=nproc)
            for i, v in enumerate(value)
        ]
    return value


def expand_env_table(
    table: Mapping[str, Any],
    base: Mapping[str, str],
    *,
    key: Sequence[str | int] = ("package", "build", "config", "env"),
    manifest: Path | None = None,
    nproc: int | None = None,
) -> dict[str, str]:
    """The ``env`` table expanded against ``base``: values must be strings, numbers or booleans.

    Entries are expanded against the base environment only (not against each
    other), so their order in the manifest cannot change the result.
    """
    out: dict[str, str] = {}
    for name, raw in table.items():
        if isinstance(raw, bool):
            raw = "1" if raw else "0"
        elif isinstance(raw, (int, float)):
            raw = str(raw)
        if not isinstance(raw, str):
            raise BuildError(
                f"environment variable {name!r} must be a string, not {type(raw).__name__}",
                file=manifest,
                key=format_key([*key, name]),
                hint='write it as `NAME = "value"`',
            )
        value = expand_text(
            raw, base, key=format_key([*key, name]) or "", manifest=manifest, nproc=nproc
        )
        problem = env_name_problem(str(name)) or env_value_problem(value)
        if problem:
            raise BuildError(problem, file=manifest, key=format_key([*key, name]), hint=ENV_HINT)
        out[str(name)] = value
    return out
