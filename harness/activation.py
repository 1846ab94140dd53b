"""The environment a cell's commands run with: the prefix activated, plus the cell's own variables.

rattler only *generates* activation scripts, so the scripts are evaluated by
bash once and the resulting variables cached per prefix (keyed by the
installed records hash and the base PATH).  Activation always starts from a
**clean** base environment: the caller's own conda/pixi/virtualenv variables
would otherwise leak into the cell (rattler does not run deactivate scripts),
and a test could pass by importing something from the harness's virtualenv.

A prefix without ``activate.d``/``env_vars.d``/``state`` needs no bash at all:
the generated script would only set ``PATH``, ``CONDA_PREFIX`` and
``CONDA_SHLVL``, which are computed directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from harness.cache import atomic_write_json, read_json
from harness.errors import RunError
from harness.frozen import digest

CACHE_NAME = "harness-activation"
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
_BASH_NOISE = {"_", "SHLVL", "PWD", "OLDPWD"}
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


def needs_scripts(prefix: Path) -> bool:
    """Whether activating ``prefix`` runs anything beyond setting PATH and CONDA_PREFIX."""
    prefix = Path(prefix)
    for sub in ("etc/conda/activate.d", "etc/conda/env_vars.d"):
        directory = prefix / sub
        if directory.is_dir() and any(directory.iterdir()):
            return True
    return (prefix / "conda-meta" / "state").exists()


def _script_env(prefix: Path, base: Mapping[str, str]) -> dict[str, str]:
    from rattler.shell import ActivationVariables, PathModificationBehavior, Shell, activate

    current = [p for p in base.get("PATH", "").split(os.pathsep) if p]
    variables = ActivationVariables(None, current, PathModificationBehavior.Replace)
    script = activate(Path(prefix), variables, Shell.bash).script
    try:
        out = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", script + "\nenv -0"],
            env=dict(base),
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise RunError(
            f"activating {prefix} failed: {exc}\n{stderr.decode(errors='replace')[-2000:]}",
            hint="an activation script in etc/conda/activate.d failed; see its output above",
        ) from None
    pairs = (
        item.split("=", 1)
        for item in out.stdout.decode(errors="replace").split("\0")
        if "=" in item
    )
    return dict(pairs)


def activated_delta(prefix: Path, base: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What activating ``prefix`` sets and unsets, relative to ``base``."""
    prefix = Path(prefix)
    if not needs_scripts(prefix):
        path = os.pathsep.join(
            [str(prefix / "bin"), *(p for p in base.get("PATH", "").split(os.pathsep) if p)]
        )
        return {"PATH": path, "CONDA_PREFIX": str(prefix), "CONDA_SHLVL": "1"}, []
    after = _script_env(prefix, base)
    delta = {k: v for k, v in after.items() if k not in _BASH_NOISE and base.get(k) != v}
    unset = [k for k in base if k not in after and k not in _BASH_NOISE]
    return delta, unset


def activation_env(
    prefix: Path,
    *,
    records_hash: str,
    extra: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], bool]:
    """The full environment of ``prefix`` plus ``extra`` (the cell's ``activation.env``).

    Returns ``(env, cached)``; ``cached`` is true when the activation came from
    the prefix's cache file rather than from evaluating it.
    """
    base = clean_base_env(base_env)
    cache_file = Path(prefix) / "conda-meta" / CACHE_NAME
    key = digest(
        {"records_hash": records_hash, "prefix": str(prefix), "PATH": base.get("PATH", "")}
    )
    stored = read_json(cache_file)
    cached = isinstance(stored, dict) and stored.get("key") == key
    if cached:
        delta, unset = dict(stored["delta"]), list(stored.get("unset", []))
    else:
        delta, unset = activated_delta(Path(prefix), base)
        atomic_write_json(cache_file, {"key": key, "delta": delta, "unset": unset})
    env = {k: v for k, v in base.items() if k not in unset}
    env.update(delta)
    for name, value in (extra or {}).items():
        env[name] = expand(str(value), env)
    return env, cached
