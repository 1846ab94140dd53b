"""Channel entries as pixi reads them, resolved to URLs the solver and the lock can use.

pixi treats a bare word (``conda-forge``, ``nvidia/label/cuda-12.4.0``) as a
channel *name* under the channel alias, never as a directory, even if a
directory of that name sits beside the manifest; only ``./``, ``../``, ``/``
and ``~`` start a path.  rattler agrees (``Channel("ch1")`` is anaconda.org),
so resolving here, once, keeps the two from drifting apart.

Some names are provided by other parts of the harness (``offline`` is the
embedded offline channel built on this machine): they register a provider
with :func:`register_named_channel` so that this module does not import them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.cache import file_sha256
from harness.errors import ChannelError

CHANNEL_ALIAS = "https://conda.anaconda.org"
_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")

ChannelProvider = Callable[[], "str | os.PathLike[str]"]
_NAMED: dict[str, ChannelProvider] = {}


def register_named_channel(name: str, provider: ChannelProvider) -> None:
    """Make the bare channel name ``name`` resolve to ``provider()`` (a URL or a path).

    The provider is called lazily, at resolve time, so registering is free and
    the offline channel is only built when a cell actually uses it.
    """
    _NAMED[name] = provider


def unregister_named_channel(name: str) -> None:
    _NAMED.pop(name, None)


@dataclass(frozen=True)
class ResolvedChannel:
    """One channel entry: as written, as a URL (no trailing slash), and its directory if local."""

    written: str
    url: str
    local_path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None


def _is_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def _is_path(text: str) -> bool:
    if text.startswith(_PATH_PREFIXES) or text in (".", ".."):
        return True
    # Windows drive paths (C:\x, C:/x)
    return len(text) > 2 and text[0].isalpha() and text[1] == ":" and text[2] in "\\/"


def _local(written: str, path: Path, *, manifest: Path | None) -> ResolvedChannel:
    if not path.is_dir():
        raise ChannelError(
            f"channel {written!r} is a local path, but {path} is not a directory",
            file=manifest,
            key="channels",
            hint="create the channel (a directory with noarch/ and <platform>/ subdirectories "
            "holding repodata.json), or fix the path; relative paths are resolved against "
            "the manifest's directory",
        )
    return ResolvedChannel(written=written, url=path.as_uri(), local_path=path)


def resolve_channel(entry: str, root: Path, *, manifest: Path | None = None) -> ResolvedChannel:
    """Resolve one channel entry against ``root`` (the manifest's directory)."""
    written = entry
    text = entry.strip()
    if not text:
        raise ChannelError("an empty channel entry", file=manifest, key="channels")
    if text in _NAMED:
        try:
            target = os.fspath(_NAMED[text]())
        except ChannelError:
            raise
        except Exception as exc:
            raise ChannelError(
                f"channel {text!r} could not be provided: {exc}", file=manifest, key="channels"
            ) from exc
        resolved = resolve_channel(target, root, manifest=manifest)
        return ResolvedChannel(written=written, url=resolved.url, local_path=resolved.local_path)
    if _is_url(text):
        if text.startswith("file://"):
            parsed = urlparse(text)
            path = Path(unquote(parsed.netloc + parsed.path))
            if not path.is_absolute():  # file://./x, as pixi and rattler accept it
                path = root / path
            return _local(written, Path(os.path.normpath(path)), manifest=manifest)
        return ResolvedChannel(written=written, url=text.rstrip("/"))
    if _is_path(text):
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ``~user/...`` for a user this machine does not know
            raise ChannelError(
                f"channel {written!r}: cannot find the home directory it names",
                file=manifest,
                key="channels",
                hint="write the channel's path without `~user`, or relative to the manifest",
            ) from None
        if not path.is_absolute():
            path = root / path
        return _local(written, Path(os.path.normpath(path)), manifest=manifest)
    if text == "offline":
        raise ChannelError(
            "channel 'offline' names the harness's offline channel, but no provider is registered",
            file=manifest,
            key="channels",
            hint="import the offline channel module (harness.channel) before solving, or "
            "write the channel's path",
        )
    return ResolvedChannel(written=written, url=f"{CHANNEL_ALIAS}/{text.strip('/')}")


def resolve_channels(
    entries: Iterable[str], root: Path, *, manifest: Path | None = None
) -> tuple[ResolvedChannel, ...]:
    """Resolve every entry, keeping pixi's order (priority) and dropping duplicate URLs."""
    out: list[ResolvedChannel] = []
    seen: set[str] = set()
    for entry in entries:
        resolved = resolve_channel(entry, root, manifest=manifest)
        if resolved.url not in seen:
            seen.add(resolved.url)
            out.append(resolved)
    return tuple(out)


# -- repodata fingerprints ------------------------------------------------------

_REPODATA_FILES = ("repodata.json", "repodata_shards.msgpack.zst")


def repodata_fingerprint(channel: ResolvedChannel, subdirs: Sequence[str]) -> str | None:
    """A hash of a local channel's repodata for ``subdirs``; ``None`` for remote channels.

    This is what makes a re-indexed local channel re-solve (and what tells the
    shared gateway to drop its in-memory copy).  Remote channels are not
    fingerprinted: fetching their repodata to hash it would cost a download on
    every plan; use ``update=True`` to pick up their changes.
    """
    if channel.local_path is None:
        return None
    h = hashlib.sha256()
    for subdir in subdirs:
        for name in _REPODATA_FILES:
            digest = file_sha256(channel.local_path / subdir / name)
            h.update(f"{subdir}/{name}={digest}\n".encode())
    return h.hexdigest()[:32]
