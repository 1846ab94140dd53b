"""The offline channel: a local conda channel built from this machine.

Conda channels are not reachable from every machine. This package builds a
``file://`` channel that holds everything a demo or test cell needs:

- ``python`` packages bridging the machine's CPython interpreters (pyvenv.cfg
  + symlinks; machine-specific, so always built locally) and ``python_abi``;
- ``cuda-version`` metapackages with conda-forge's ``__cuda`` constraints;
- pure-Python wheels (pip, setuptools, wheel, pytest and its dependencies)
  converted to ``noarch: python`` packages.

Entry points: :func:`build_offline_channel` (idempotent, locked, atomic),
:func:`find_python` (skip reasons for missing interpreters),
:func:`channel_main` (the ``harness channel offline`` command) and
:func:`register_offline_channel` (lets manifests say ``channels = ["offline"]``).
"""

from __future__ import annotations

from harness.channel.cli import channel_main, default_channel_root
from harness.channel.cuda import CUDA_VERSIONS
from harness.channel.lookup import PythonMatch, find_python
from harness.channel.offline import STAMP_NAME, OfflineChannel, build_offline_channel
from harness.channel.provider import offline_channel_provider, register_offline_channel
from harness.channel.pythons import PythonInfo, discover_pythons
from harness.channel.wheelhouse import DEFAULT_REQUIREMENTS, default_wheelhouse

__all__ = [
    "CUDA_VERSIONS",
    "DEFAULT_REQUIREMENTS",
    "STAMP_NAME",
    "OfflineChannel",
    "PythonInfo",
    "PythonMatch",
    "build_offline_channel",
    "channel_main",
    "default_channel_root",
    "default_wheelhouse",
    "discover_pythons",
    "find_python",
    "offline_channel_provider",
    "register_offline_channel",
]
