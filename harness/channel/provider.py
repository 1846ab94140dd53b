"""Let manifests name the offline channel as ``channels = ["offline"]``.

:mod:`harness.channels` resolves the bare name ``offline`` through a provider
that someone registers; it does not import this package itself. Registration
is an explicit call, not an import side effect: importing
``harness.channel`` must not change how another module resolves channel
names (tests that check the unregistered case share processes with ours).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.channel.cli import default_channel_root
from harness.channel.offline import build_offline_channel

OFFLINE_NAME = "offline"


def offline_channel_provider(root: Path | None = None, **build: Any) -> Callable[[], Path]:
    """A provider that builds (or confirms) the channel each time it is resolved.

    ``root`` defaults to :func:`default_channel_root` evaluated at call time,
    so ``HARNESS_CACHE_DIR`` set later is honoured; ``build`` goes to
    :func:`build_offline_channel` (``pythons=``, ``progress=``...). An
    up-to-date channel costs a few milliseconds.
    """

    def provide() -> Path:
        target = root if root is not None else default_channel_root()
        return build_offline_channel(target, **build).path

    return provide


def register_offline_channel(root: Path | None = None, **build: Any) -> None:
    """Register :func:`offline_channel_provider` under the channel name ``offline``."""
    from harness.channels import register_named_channel

    register_named_channel(OFFLINE_NAME, offline_channel_provider(root, **build))
