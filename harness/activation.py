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
import subprocess
from collections.abc import Mapping
from pathlib import Path

from harness.cache import atomic_write_json, read_json
from harness.errors import RunError
from harness.frozen import digest
from harness.launch import clean_base_env, expand
from harness.warmstart import activated_env

__all__ = ["clean_base_env", "expand"]  # re-exported: they were defined here

CACHE_NAME = "harness-activation"
_BASH_NOISE = {"_", "SHLVL", "PWD", "OLDPWD"}


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
    env = activated_env({"unset": unset, "delta": delta}, extra or {}, base)
    return env, cached
