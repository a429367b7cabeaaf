"""Admission: how many requests one API process runs at once, and how many body bytes it holds.

Both answer 503 with ``Retry-After`` when full, in the API's error shape, so that clients
and load balancers retry (perhaps on another instance) instead of the process growing
without bound.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from tungstenkit.app.error_responses import Overloaded

#: Seconds a client should wait before retrying a request refused for lack of room.
RETRY_AFTER_S = 1


class RequestSlots:
    """ASGI middleware: at most ``limit`` requests in progress; past it, 503.

    Replaces uvicorn's ``limit_concurrency``, which also counts idle connections (those are
    bounded by ``app.http_protocol``) and answers in plain text.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            await _unavailable(send, f"{self.limit} requests are in progress; retry shortly")
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


async def _unavailable(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyBudget:
    """The request body bytes one process holds at once, over all requests.

    Bytes are counted as they arrive (a declared length that cannot fit is refused before
    any is read): a client that declares a large body and sends it slowly holds only what it
    sent. The first ``free_bytes`` of every body are not counted, so small requests are never
    refused for the sake of large ones (uvicorn buffers that much per connection anyway).
    """

    def __init__(self, limit: int, free_bytes: int) -> None:
        self.limit = limit
        self.free_bytes = free_bytes
        self.held = 0

    def check_declared(self, length: int) -> None:
        """Refuse at once a body that cannot fit now."""
        if self.limit and length > self.free_bytes and self.held + length - self.free_bytes > self.limit:
            raise self._full()

    def take(self, before: int, size: int) -> int:
        """Count a body growing from ``before`` to ``size`` bytes; returns the bytes counted."""
        counted = max(0, size - max(before, self.free_bytes))
        if counted and self.limit and self.held + counted > self.limit:
            raise self._full()
        self.held += counted
        return counted

    def give_back(self, counted: int) -> None:
        self.held -= counted

    def _full(self) -> Overloaded:
        return Overloaded(
            f"The server holds {self.limit} bytes of request bodies already; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
