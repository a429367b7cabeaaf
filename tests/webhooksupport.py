"""A loopback webhook receiver for the tests: records deliveries, can fail or hang on cue."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers 200, after failing the first ``fail_first`` requests with 500; with
    ``hang`` set, holds each request until ``release`` is set (or the test ends)."""

    fail_first: int = 0
    hang: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    #: Requests that arrived (a hanging one is here before it is answered).
    arrived: list[Delivery] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def handle(self, delivery: Delivery) -> int:
        with self._lock:
            self.arrived.append(delivery)
            failing = len(self.arrived) <= self.fail_first
        if self.hang:
            self.release.wait(120)
        if failing:
            return 500
        with self._lock:
            self.deliveries.append(delivery)
        return 200

    def events(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(d.json["id"], d.json["event"]) for d in self.deliveries]


@contextmanager
def webhook_receiver(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            delivery = Delivery(self.path, dict(self.headers.items()), self.rfile.read(length))
            status = receiver.handle(delivery)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
