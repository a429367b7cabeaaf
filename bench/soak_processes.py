"""The soak's processes: a webhook receiver that can go down, and ``tungsten serve``'s
children found by role through /proc."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAMESPACE = "soak"


class Receiver:
    """A loopback webhook receiver that can be taken down (its port closed) and back up."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()  # delivery ids (X-Tungsten-Delivery)
        self.predictions: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.deliveries[self.headers.get("X-Tungsten-Delivery", "")] += 1
                    receiver.predictions.add(json.loads(body)["id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---------------------------------------------------------------------------------
# Processes of `tungsten serve`


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path

    def roles(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {"api": [], "worker": [], "redis": [], "webhooks": []}
        for pid in _children(self.process.pid):
            if not _running(pid):
                continue
            argv = _cmdline(pid)
            if "redis-server" in argv:
                found["redis"].append(pid)
            elif " _api " in argv:
                found["api"].append(pid)
            elif " _webhooks " in argv:
                found["webhooks"].append(pid)
            elif " worker " in argv:
                found["worker"].append(pid)
        return found

    def redis_url(self) -> str:
        return (self.home / "redis" / NAMESPACE / "redis.url").read_text().strip()
