"""pixi tasks: the cell's test task resolved as ``pixi run test`` would, then one command.

pixi looks a task up per environment and platform: the environment's features in
order, each feature's most specific target first, and the first definition of a
name wins *whole* (a ``[target.linux.tasks.test]`` replaces ``[tasks.test]``, its
``depends-on`` included).  A task is a string, a table (``cmd`` as a string or a
list joined with spaces, ``depends-on``, ``cwd``, ``env``, ``args`` with defaults)
or an alias (a list of ``{ task = ... }``).  Its ``depends-on`` chain runs first,
each task once, in order, and the first failure stops the chain.

The chain compiles to one bash script, so the full run and the warm start run the
same text: each dependency on its own line, followed by a line that names the task
and its exit status when it fails; the last task last, so that the test command's
extra arguments (appended as ``"$@"``) reach it.  A single task without ``cwd`` or
``env`` stays exactly its command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import ManifestError
from harness.frozen import FrozenDict

TASK_KEYS = (
    "cmd", "depends-on", "depends_on", "cwd", "env", "args", "description", "inputs", "outputs",
    "clean-env", "default-environment",
)
_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

Err = Callable[..., ManifestError]


class TaskElsewhere(ManifestError):
    """A task the chain needs is defined only in features this environment does not include:
    pixi would run it in another environment; a cell runs in its own only."""


@dataclass(frozen=True)
class TaskStep:
    """One task of a chain, rendered: its command, directory and variables."""

    name: str
    command: str | None  # None: an alias or a task that only depends on others
    cwd: str | None = None
    env: FrozenDict[str, str] = FrozenDict()


def _depends(task: Mapping[str, Any] | Sequence[Any], name: str, err: Err) -> list[tuple[str, tuple[str, ...]]]:
    """``depends-on`` entries as (task name, positional args)."""
    # An alias is itself the list of { task = ... }.
    raw: Any = task.get("depends-on", task.get("depends_on", ())) if isinstance(task, Mapping) else task
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise err(f"task '{name}': `depends-on` must be a list", "tasks", name, "depends-on")
    out: list[tuple[str, tuple[str, ...]]] = []
    for entry in raw:
        if isinstance(entry, str):
            out.append((entry, ()))
        elif isinstance(entry, Mapping) and isinstance(entry.get("task"), str):
            if entry.get("environment") is not None:
                raise err(
                    f"task '{name}' runs '{entry['task']}' in environment '{entry['environment']}': "
                    "a cell runs its tasks in its own environment only", "tasks", name, "depends-on",
                    hint="make that environment a cell of its own, or drop `environment`",
                )
            args = entry.get("args", ())
            if isinstance(args, Mapping):
                raise err(f"task '{name}': named arguments of '{entry['task']}' are not supported",
                          "tasks", name, "depends-on", hint="pass the arguments by position: args = [\"a\"]")
            if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
                raise err(f"task '{name}': `args` of '{entry['task']}' must be a list of strings",
                          "tasks", name, "depends-on")
            out.append((entry["task"], tuple(args)))
        else:
            raise err(f"task '{name}': a `depends-on` entry must be a task name or {{ task = \"...\" }}",
                      "tasks", name, "depends-on")
    return out


def _arguments(task: Mapping[str, Any], name: str, given: Sequence[str], err: Err) -> dict[str, str]:
    """The task's ``args`` bound to ``given`` (by position), else to their defaults."""
    declared = task.get("args", ())
    if not isinstance(declared, (list, tuple)):
        raise err(f"task '{name}': `args` must be a list", "tasks", name, "args")
    if len(given) > len(declared):
        raise err(f"task '{name}' takes {len(declared)} arguments, {len(given)} given", "tasks", name, "args")
    values: dict[str, str] = {}
    for i, arg in enumerate(declared):
        if isinstance(arg, str):
            arg_name, default = arg, None
        elif isinstance(arg, Mapping) and isinstance(arg.get("arg"), str):
            arg_name, default = arg["arg"], arg.get("default")
        else:
            raise err(f"task '{name}': an argument is a name or {{ arg = \"...\", default = \"...\" }}",
                      "tasks", name, "args")
        if i < len(given):
            values[arg_name] = given[i]
        elif default is not None:
            values[arg_name] = str(default)
        else:
            raise err(
                f"task '{name}' needs its argument '{arg_name}', which has no default",
                "tasks", name, "args",
                hint=f'give it a default: {{ arg = "{arg_name}", default = "..." }} (the harness passes '
                "its own extra arguments to the end of the test command)",
            )
    return values


def _render(text: str, values: Mapping[str, Any], name: str, err: Err) -> str:
    """pixi's MiniJinja templates, for the forms tasks use: ``{{ arg }}`` and ``{{ pixi.x.y }}``."""
    if "{%" in text or "{#" in text:
        raise err(f"task '{name}': template blocks ({{% ... %}}) are not supported, only {{{{ name }}}}",
                  "tasks", name)

    def one(match: re.Match[str]) -> str:
        expr = match.group(1)
        if not _IDENT.match(expr):
            raise err(f"task '{name}': cannot render {{{{ {expr} }}}}: only names such as "
                      "{{ arg }} or {{ pixi.platform }} are supported", "tasks", name)
        value: Any = values
        for part in expr.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise err(f"task '{name}': {{{{ {expr} }}}} names no argument of the task",
                          "tasks", name, hint="declare it under `args`")
            value = value[part]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _TEMPLATE.sub(one, text)


def _command(task: Any, name: str, err: Err) -> str | None:
    cmd = task.get("cmd") if isinstance(task, Mapping) else task
    if cmd is None or (isinstance(task, (list, tuple))):
        return None
    if isinstance(cmd, str):
        return cmd if cmd.strip() else None
    if isinstance(cmd, (list, tuple)) and cmd and all(isinstance(p, str) for p in cmd):
        return " ".join(cmd)
    raise err(f"task '{name}': the command must be a string or a non-empty list of strings",
              "tasks", name, "cmd", hint='write test = "python -m pytest" or test = { cmd = ["pytest", "tests"] }')


def task_chain(
    tasks: Mapping[str, Any], name: str, context: Mapping[str, Any], err: Err,
    elsewhere: Callable[[str], list[str]] = lambda _: [],
) -> tuple[TaskStep, ...]:
    """``name`` and everything it depends on, dependencies first, each (task, args) once.

    A task that does not exist or a cycle is an error naming the tasks;
    ``elsewhere(task)`` names the features outside the environment that define it
    (raised as :class:`TaskElsewhere`).
    """
    steps: list[TaskStep] = []
    done: set[tuple[str, tuple[str, ...]]] = set()

    def visit(task_name: str, args: tuple[str, ...], path: tuple[str, ...]) -> None:
        if task_name in path:
            cycle = " -> ".join([*path[path.index(task_name):], task_name])
            raise err(f"the tasks depend on each other in a cycle: {cycle}", "tasks", path[-1],
                      hint="remove one of the `depends-on` entries")
        if (task_name, args) in done:
            return
        if task_name not in tasks and (owners := elsewhere(task_name)):
            where = f"task '{path[-1]}' depends on" if path else "the cell runs"
            raise TaskElsewhere(
                f"{where} task '{task_name}', which only feature(s) {', '.join(owners)} define: pixi runs "
                "it in another environment, a cell runs its tasks in its own environment only",
                hint="make the test task of this environment self-contained, or test the other "
                "environment as its own cell",
            )
        if task_name not in tasks:
            known = ", ".join(sorted(tasks)) or "none"
            where = f"task '{path[-1]}' depends on" if path else "the cell runs"
            raise err(f"{where} task '{task_name}', which this environment does not define "
                      f"on its platform (tasks: {known})", "tasks", *(path[-1:] or (task_name,)))
        task = tasks[task_name]
        if isinstance(task, Mapping):
            unknown = [k for k in task if k not in TASK_KEYS]
            if unknown:
                raise err(f"task '{task_name}': unknown field `{unknown[0]}`", "tasks", task_name, unknown[0],
                          hint="a task takes " + ", ".join(TASK_KEYS))
        elif not isinstance(task, (str, list, tuple)):
            raise err(f"task '{task_name}' must be a command, a table or a list of {{ task = ... }}",
                      "tasks", task_name)
        for dep, dep_args in _depends(task, task_name, err) if not isinstance(task, str) else ():
            visit(dep, dep_args, (*path, task_name))
        done.add((task_name, args))
        values: dict[str, Any] = dict(context)
        if isinstance(task, Mapping):
            values.update(_arguments(task, task_name, args, err))
        command = _command(task, task_name, err)
        cwd = env = None
        if isinstance(task, Mapping):
            cwd = task.get("cwd")
            if cwd is not None and not isinstance(cwd, str):
                raise err(f"task '{task_name}': `cwd` must be a string", "tasks", task_name, "cwd")
            env = task.get("env")
            if env is not None and (not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values())):
                raise err(f"task '{task_name}': `env` must be a table of strings", "tasks", task_name, "env")
        steps.append(TaskStep(
            task_name,
            _render(command, values, task_name, err) if command is not None else None,
            _render(cwd, values, task_name, err) if cwd else None,
            FrozenDict({k: _render(v, values, task_name, err) for k, v in (env or {}).items()}),
        ))

    visit(name, (), ())
    return tuple(steps)


def _dq(text: str) -> str:
    """``text`` in double quotes: ``$VAR`` still expands, as in pixi's task shell."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def _prologue(step: TaskStep) -> str:
    parts = []
    if step.cwd:
        cwd = step.cwd if step.cwd.startswith(("/", "$")) else f"$PIXI_PROJECT_ROOT/{step.cwd}"
        parts.append(f"cd {_dq(cwd)}")
    parts += [f"export {k}={_dq(v)}" for k, v in step.env.items()]
    return " && ".join(parts)


def render_chain(steps: Sequence[TaskStep]) -> str | None:
    """The chain as one command (bash script text); ``None`` when no task has a command."""
    runnable = [s for s in steps if s.command is not None]
    if not runnable:
        return None
    last = runnable[-1]
    if len(runnable) == 1 and not last.cwd and not last.env:
        return last.command
    lines = []
    for step in runnable[:-1]:
        prologue = _prologue(step)
        body = f"{prologue} && {step.command}" if prologue else step.command
        lines.append(
            f"( {body}\n) || {{ status=$?; echo \"harness: task '{step.name}' failed with exit code $status; "
            f"the tasks after it did not run\" >&2; exit $status; }}"
        )
    prologue = _prologue(last)
    lines.append(f"{prologue} && {last.command}" if prologue else last.command)
    return "\n".join(lines)
