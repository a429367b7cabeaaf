"""The client's base URL, headers and timeouts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from tungstenkit.client._errors import ClientError

_UNSET = object()
#: Where a client finds its API key when it is given none.
API_KEY_ENV = "TUNGSTEN_API_KEY"


def base_url(url: str) -> str:
    """``url`` without its trailing slash; ``ClientError`` unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"The server URL must look like http://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def request_headers(headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    """``headers``, with ``Authorization: Bearer`` for ``api_key`` (else ``$TUNGSTEN_API_KEY``, if set)."""
    found = dict(headers or {})
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if key:
        found["Authorization"] = f"Bearer {key}"
    return found


def timeouts(timeout: float, *, hold: float = 0.0, read: float | None | object = _UNSET) -> httpx.Timeout:
    """``timeout`` for connecting, sending and reading (plus ``hold`` for a long-poll's read).

    Waiting for a free pooled connection is not bounded: with many long-polls open a
    request queues for a connection rather than failing.
    """
    read_s = timeout + hold if read is _UNSET else read
    return httpx.Timeout(timeout, read=read_s, pool=None)  # type: ignore[arg-type]
