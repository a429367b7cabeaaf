"""The event-stream reader that ``stream()`` uses."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.filesupport import png
from tungstenkit import AsyncClient, Client, Image
from tungstenkit.client import EventsUnsupported
from tungstenkit.client._sse import Event, EventParser


def test_events_are_split_on_blank_lines_and_comments_are_skipped() -> None:
    parser = EventParser()
    lines = [": keep-alive", "event: update", "id: 1", 'data: {"status":', 'data: "running"}', "", "", "data: x", ""]
    events = [event for event in map(parser.feed, lines) if event is not None]
    assert events == [Event("update", '{"status":\n"running"}', "1"), Event("message", "x", "1")]


class _Streaming(BaseHTTPRequestHandler):
    """A server with an event stream: two updates of one prediction, the last one its end."""

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(
                200,
                "application/json",
                json.dumps(
                    {
                        "name": "m",
                        "batch_size": 1,
                        "input_schema": {},
                        "output_schema": {"properties": {"image": {"type": "string", "x-tungsten-file": "image"}}},
                    }
                ).encode(),
            )
        elif self.path == f"/predictions/{OLD}":
            self._send(200, "application/json", json.dumps({"status": "running", "outputs": None}).encode())
        elif self.path == f"/predictions/{ID}/events":
            running = json.dumps({"status": "running", "outputs": None})
            done = json.dumps({"status": "success", "outputs": [{"image": "data:image/png;base64," + PNG}]})
            body = f": hello\n\nevent: update\ndata: {running}\n\nevent: update\ndata: {done}\n\n".encode()
            self._send(200, "text/event-stream", body)
        else:
            self._send(404, "application/json", b'{"detail": "Not Found"}')

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


ID = "a" * 32
#: A prediction on a server without event streams (its GET works, its events are a 404).
OLD = "b" * 32
PNG = base64.b64encode(png()).decode()


@pytest.fixture
def streaming_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Streaming)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stream_yields_each_update_until_the_end_on_a_server_with_events(streaming_server: str) -> None:
    with Client(streaming_server) as client:
        updates = list(client.stream(ID))
    assert [u.status for u in updates] == ["running", "success"]
    assert isinstance(updates[-1].outputs[0]["image"], Image) and updates[-1].outputs[0]["image"].read_bytes() == png()

    async def main() -> list[str]:
        async with AsyncClient(streaming_server) as client:
            return [update.status async for update in client.stream(ID)]

    assert asyncio.run(main()) == ["running", "success"]


def test_a_server_without_event_streams_is_said_clearly(streaming_server: str) -> None:
    with Client(streaming_server) as client, pytest.raises(EventsUnsupported, match="no event stream"):
        list(client.stream(OLD))
