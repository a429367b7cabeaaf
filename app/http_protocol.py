"""The API's HTTP protocol: uvicorn's httptools protocol with the guards a public server needs.

uvicorn bounds neither the time a client may take to send a request head, nor its size,
nor how slowly a body may trickle in, and its connection limit counts idle connections too:
a few thousand sockets that send half a head and then nothing hold every slot, and every
other client gets 503 for as long as they stay. These guards sit in the protocol, not in
the ASGI app, because the app sees a request only once its head is complete and its task
started: by then a slow or huge head has already held a slot or the memory. uvicorn's
other server (h11) only caps the head's size (as a 400) and costs the hot path more
CPU; no server setting bounds the time to receive a head. So:

- **Head time.** A connection must deliver a complete request head within
  ``header_timeout_s`` of opening, or of its previous response: else it is closed (with
  408 if it had started one).
- **Head size.** More than ``max_header_bytes`` of request line and headers: 431, closed.
- **Body rate.** After ``body_timeout_s``, a body must have kept up with
  ``min_body_bytes_per_s`` on average since its head, or the connection is closed (Apache's
  ``mod_reqtimeout`` rule: the deadline moves one second later for each that many bytes).
  Time during which the server itself stopped reading (flow control) does not count.
- **Slots.** Past ``max_connections``, a new connection closes the one that has waited
  longest for a request head (idle keep-alive or a slow head): clients that are sending
  requests are served, and those that are not give way. Only connections with a request in
  progress are never closed to make room; past that many, a request gets 503 with
  ``Retry-After`` (in the API's error shape: uvicorn's ``limit_concurrency`` also counts idle
  connections, and answers in plain text).

One sweep a second per process checks the deadlines, so a request costs the hot path two
dictionary updates and no timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tungstenkit._settings import Settings

logger = logging.getLogger(__name__)

#: Seconds between two checks of the deadlines.
SWEEP_S = 1.0
#: Seconds a client should wait before retrying a request refused for lack of room.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold and for how long."""

    #: Connections before the longest-waiting idle one is closed for a newcomer (0: no limit).
    max_connections: int = 2048
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    body_timeout_s: float = 10.0
    #: 0: no minimum body rate.
    min_body_bytes_per_s: int = 8 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=settings.max_connections,
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            body_timeout_s=settings.body_timeout_s,
            min_body_bytes_per_s=settings.min_body_bytes_per_s,
        )


@dataclass
class ConnectionGuard:
    """What the connections of one server share: who waits for a head (oldest first), who
    sends a body, and the sweep that enforces the deadlines."""

    limits: ConnectionLimits
    #: Connections waiting for a request head, with the loop time they started waiting.
    #: Insertion order is waiting order: an entry is removed before it is added again.
    waiting: dict[GuardedHttpProtocol, float] = field(default_factory=dict)
    #: Connections receiving a request body, with the loop time it started.
    receiving: dict[GuardedHttpProtocol, float] = field(default_factory=dict)
    #: Connections closed since the last report, by reason.
    closed: dict[str, int] = field(default_factory=dict)
    #: What a request gets whose head is too large, or that finds every request slot taken.
    head_too_large: ErrorApp = field(init=False)
    busy: ErrorApp = field(init=False)
    head_too_large_detail: str = field(init=False)
    _sweeping: bool = False

    def __post_init__(self) -> None:
        self.head_too_large_detail = f"The request line and headers exceed {self.limits.max_header_bytes} bytes"
        self.head_too_large = ErrorApp(431, self.head_too_large_detail, {"Connection": "close"})
        self.busy = ErrorApp(
            503,
            f"{self.limits.max_connections} requests are in progress; retry shortly",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(SWEEP_S, self._sweep, loop)

    def count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def make_room(self, newcomer: GuardedHttpProtocol) -> None:
        """Close the connection that has waited longest for a request head."""
        for connection in self.waiting:
            if connection is not newcomer:
                connection.give_way()
                return

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            now = loop.time()
            deadline = now - self.limits.header_timeout_s
            for connection, since in list(self.waiting.items()):
                if since > deadline:
                    break  # the rest started waiting later
                connection.head_timed_out()
            if self.limits.min_body_bytes_per_s:
                for connection in list(self.receiving):
                    connection.check_body_rate(now)
            if self.closed:
                logger.info(
                    "Closed client connections: %s",
                    ", ".join(f"{count} {reason}" for reason, count in sorted(self.closed.items())),
                )
                self.closed.clear()
        finally:
            loop.call_later(SWEEP_S, self._sweep, loop)


def _response(status: int, phrase: str, detail: str) -> bytes:
    """A whole response that closes the connection, in the API's one error shape."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ErrorApp:
    """An ASGI app that answers every request with one error, in the API's error shape.

    The protocol runs it instead of the API for a request it refuses once the request's
    head is parsed: uvicorn then orders the response, reads or discards the body, and keeps
    or closes the connection as for any other.
    """

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        self._body = body
        self._start = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
            ],
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(self._start)
        await send({"type": "http.response.body", "body": self._body})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines, a head size limit and
    connection slots that idle clients give up (see the module's docstring).

    The overrides call the base class by name (not ``super()``): they run on every request.
    """

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        HttpToolsProtocol.__init__(self, *args, **kwargs)
        self._guard = guard
        self._limits = guard.limits
        # Requests in progress past max_connections get the 503 of ``guard.busy`` (in the
        # API's error shape); uvicorn's own check would also count idle connections.
        self.limit_concurrency = None
        self._max_requests = guard.limits.max_connections
        self._in_head = True
        #: Raw bytes of a head that stayed incomplete over the chunks received so far (bounds
        #: what the parser buffers inside a header it has not finished).
        self._head_bytes = 0
        #: At least the size of a head that completes in the chunk being parsed.
        self._head_bound = 0
        self._heads_parsed = 0
        self._body_bytes = 0
        #: Set once a response of ours refused the connection: nothing more is parsed.
        self._refused = False

    # -- connection life ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's connections come with a full (read and write) transport.
        HttpToolsProtocol.connection_made(self, cast(asyncio.Transport, transport))
        guard = self._guard
        guard.waiting[self] = self.loop.time()
        guard.start_sweeping(self.loop)
        if self._max_requests and len(self.connections) > self._max_requests:
            guard.make_room(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.waiting.pop(self, None)
        self._guard.receiving.pop(self, None)
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        in_head, heads_before = self._in_head, self._heads_parsed
        if in_head:
            self._head_bound = self._head_bytes + len(data)
        else:
            # Body bytes, for the rate check (those that came in the head's last chunk are not
            # counted: at most one chunk, which body_timeout_s covers).
            self._body_bytes += len(data)
            self._head_bound = len(data)
        HttpToolsProtocol.data_received(self, data)
        # A chunk that began and ended inside one head counts against its limit in full (one
        # in which a head completed is checked in on_headers_complete; one that began in a
        # body may hold the start of a next head: at most one chunk goes uncounted).
        if in_head and self._in_head and self._heads_parsed == heads_before and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._guard.count("heads too large")
                self._refuse(431, "Request Header Fields Too Large", self._guard.head_too_large_detail)

    # -- parser callbacks -------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        guard = self._guard
        guard.waiting.pop(self, None)
        self._in_head = False
        self._heads_parsed += 1
        limit = self._limits.max_header_bytes
        # The exact size only when the chunks it came in could hold more than the limit.
        too_large = self._head_bound > limit and self._head_size() > limit
        self._head_bytes = 0
        self._body_bytes = 0
        guard.receiving[self] = self.loop.time()
        if too_large or (self._max_requests and len(self.tasks) >= self._max_requests):
            if too_large:
                guard.count("heads too large")
            app, self.app = self.app, guard.head_too_large if too_large else guard.busy
            try:
                HttpToolsProtocol.on_headers_complete(self)
            finally:
                self.app = app
        else:
            HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._guard.receiving.pop(self, None)
        self._in_head = True
        HttpToolsProtocol.on_message_complete(self)
        if self.cycle.response_complete:  # answered before its body had all arrived
            self._wait_for_a_head()

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        # Idle once both the request and its response are done, unless a pipelined request
        # started or the connection is closing.
        if self._in_head and self.cycle.response_complete:
            self._wait_for_a_head()

    def _head_size(self) -> int:
        """The request line and headers, in bytes (as parsed: give or take the separators)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _wait_for_a_head(self) -> None:
        if not self.transport.is_closing():
            waiting = self._guard.waiting
            waiting.pop(self, None)
            waiting[self] = self.loop.time()

    # -- the guards ---------------------------------------------------------------------------
    def give_way(self) -> None:
        """Close to make room for a new connection (this one was waiting for a head)."""
        self._guard.waiting.pop(self, None)
        self._guard.count("closed for new connections")
        self._close(408, "The server needed this connection for another client; send the request again")

    def head_timed_out(self) -> None:
        self._guard.waiting.pop(self, None)
        self._guard.count(f"without a request head in {self._limits.header_timeout_s:g}s")
        self._close(408, f"No complete request head within {self._limits.header_timeout_s:g}s")

    def check_body_rate(self, now: float) -> None:
        since = self._guard.receiving.get(self)
        if since is None:
            return
        if self.flow.read_paused:
            # The server stopped reading (the app is busy, or a pipelined request waits):
            # not the client's delay. Measure again from when reading resumes.
            self._guard.receiving[self] = now
            self._body_bytes = 0
            return
        limits = self._limits
        if now - since > limits.body_timeout_s + self._body_bytes / limits.min_body_bytes_per_s:
            self._guard.receiving.pop(self, None)
            self._guard.count(f"sending a body slower than {limits.min_body_bytes_per_s} bytes/s")
            # A body in progress belongs to a running request: no response of ours may
            # interleave with the app's, so the connection just closes.
            self.transport.close()

    def _close(self, status: int, detail: str) -> None:
        """Close a connection that is between requests: with ``status`` if a request head
        had begun, silently if nothing had been sent (as a keep-alive timeout would)."""
        if self._head_bytes and self._in_head:
            self._refuse(status, "Request Timeout", detail)
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, phrase: str, detail: str) -> None:
        self._refused = True
        self._guard.waiting.pop(self, None)
        self._guard.receiving.pop(self, None)
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_response(status, phrase, detail))
            self.transport.close()
