"""The client's base URL and timeouts."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tungstenkit.client._errors import ClientError

_UNSET = object()


def base_url(url: str) -> str:
    """``url`` without its trailing slash; ``ClientError`` unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"The server URL must look like http://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def timeouts(timeout: float, *, hold: float = 0.0, read: float | None | object = _UNSET) -> httpx.Timeout:
    """``timeout`` for connecting, sending and reading (plus ``hold`` for a long-poll's read).

    Waiting for a free pooled connection is not bounded: with many long-polls open a
    request queues for a connection rather than failing.
    """
    read_s = timeout + hold if read is _UNSET else read
    return httpx.Timeout(timeout, read=read_s, pool=None)  # type: ignore[arg-type]
