"""Real media made in the tests, and a loopback HTTP server to fetch URL inputs from."""

from __future__ import annotations

import base64
import io
import struct
import threading
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image as PILImage


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def png(size: tuple[int, int] = (8, 6), color: str | tuple[int, ...] = "red", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def gradient_png(width: int = 32, height: int = 24) -> bytes:
    """A picture with detail in it, so that filters visibly change it."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.full((height, width), 128, np.float32),
        ],
        axis=-1,
    )
    pixels[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 255
    buffer = io.BytesIO()
    PILImage.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, "blue").save(buffer, "JPEG")
    return buffer.getvalue()


def wav(seconds: float = 0.1, rate: int = 8000) -> bytes:
    """A 440 Hz tone, 16-bit mono, written by the stdlib ``wave`` module."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 20000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def gif_video(frames: int = 5, size: tuple[int, int] = (16, 12)) -> bytes:
    """A short animated GIF: no video encoder is installed here, and Pillow writes these."""
    images = [PILImage.new("RGB", size, (i * 50 % 256, 100, 200 - i * 30)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header announces ``width`` x ``height`` pixels (10 gigapixels by default).

    Decoding it would need tens of gigabytes; a guarded server refuses it from the header.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # the first rows: all zero, compressed to little
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (to test read timeouts); interrupted at shutdown.
    delay: float = 0.0
    #: Send a Content-Length header (without one, the body ends when the connection closes).
    length: bool = True
    #: Close the connection without answering.
    hang_up: bool = False
    #: Seconds between the body's bytes, sent one at a time (a slow server).
    drip: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # http.server's name
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if route.delay:
            self.server.closing.wait(route.delay)
        if self.server.closing.is_set() or route.hang_up:
            self.close_connection = True
            return
        self.send_response(route.status)
        headers = {"Content-Length": str(len(route.body))} if route.length else {}
        headers.update(route.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not route.drip:
            self.wfile.write(route.body)
            return
        for byte in route.body:
            if self.server.closing.wait(route.drip):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        return


class FileServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 in a thread, answering ``routes``; records every path asked for."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.closing = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that gave up (a timeout test) is expected here

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, body: bytes = b"", **kwargs: object) -> str:
        self.routes[path] = Route(body=body, **kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def file_server() -> Iterator[FileServer]:
    server = FileServer().start()
    try:
        yield server
    finally:
        server.stop()
