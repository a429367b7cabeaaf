"""Helpers for the test suite: polling with deadlines, and `tungsten serve` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from tungstenkit._redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
EXAMPLES = ROOT / "examples"

T = TypeVar("T")
_pause = threading.Event()


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        _pause.wait(interval)  # the poll interval, not a synchronisation


def tungsten(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the `tungsten` CLI to completion (in ``cwd``, the checkout by default)."""
    return subprocess.run(
        [sys.executable, "-m", "tungstenkit.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def start_worker(
    model: str | Path, redis_url: str, namespace: str, env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `tungsten worker MODEL` as another machine would, joining ``namespace`` through
    ``redis_url``; its output is appended to ``log`` (discarded without one)."""
    command = [sys.executable, "-m", "tungstenkit.cli", "worker", str(model), "--redis-url", redis_url]
    command += ["--namespace", namespace]
    if log is None:
        out: Any = subprocess.DEVNULL
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out, env={**os.environ, **env})
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})


def pings(client: redis.Redis) -> bool:
    """Whether the server of ``client`` answers PING (and close ``client``)."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures, and append them to ``$TUNGSTEN_FAULT_REPORT`` (JSON lines)."""
    line = json.dumps({"scenario": name, **figures})
    target = os.environ.get("TUNGSTEN_FAULT_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")
    print(line)


def audit_runs(audit: Path, phase: str = "start") -> list[tuple[str, list[int]]]:
    """The recorder model's batches, as (worker pid, inputs), that reached ``phase``."""
    if not audit.exists():
        return []
    runs = []
    for line in audit.read_text().splitlines():
        pid, _batch, seen, *xs = line.split()
        if seen == phase:
            runs.append((pid, [int(x) for x in xs]))
    return runs


class Server:
    """A running `tungsten serve` subprocess and an HTTP client for it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> httpx.Response | None:
        try:
            return self.client.get("/health", timeout=2)
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = 60.0, workers: int = 1) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"tungsten serve exited with {self.process.returncode}:\n{self.log()}")
            response = self.health()
            return response is not None and response.status_code == 200 and response.json()["ready_workers"] >= workers

        wait_for(ready, timeout, interval=0.05, what=f"server on {self.port} to be ready")

    def wait_listening(self, timeout: float = 60.0) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"tungsten serve exited with {self.process.returncode}:\n{self.log()}")
            return self.health() is not None

        wait_for(listening, timeout, interval=0.05, what=f"server on {self.port} to listen")

    def predict(self, inputs: list[dict[str, Any]], wait: float = 30.0) -> dict[str, Any]:
        """POST then long-poll until the prediction ends."""
        response = self.client.post("/predictions", json=inputs)
        assert response.status_code == 200, response.text
        return self.result(response.json()["prediction_id"], wait)

    def result(self, prediction_id: str, wait: float = 30.0) -> dict[str, Any]:
        response = self.client.get(f"/predictions/{prediction_id}", params={"wait": wait}, timeout=wait + 10)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signum)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                    raise AssertionError(f"tungsten serve did not stop within {timeout}s:\n{self.log()}") from None
        finally:
            self.client.close()
        return self.process.returncode


class ServerFactory:
    """Starts `tungsten serve` subprocesses and stops them all at the end."""

    def __init__(self, folder: Path, redis_url: str | None, home: Path) -> None:
        self.folder = folder
        self.redis_url = redis_url
        self.home = home
        self.servers: list[Server] = []
        self._count = 0

    def __call__(
        self,
        model: str | Path | None,
        *args: str,
        env: dict[str, str] | None = None,
        embedded_redis: bool = False,
        ready: bool = True,
        workers: int | None = 1,
        namespace: str | None = None,
        cwd: Path = ROOT,
    ) -> Server:
        self._count += 1
        port = free_port()
        command = [sys.executable, "-m", "tungstenkit.cli", "serve", *([str(model)] if model is not None else [])]
        command += ["-p", str(port), "--host", "127.0.0.1"]
        if workers is not None:
            command += ["--workers", str(workers)]
        if not embedded_redis:
            assert self.redis_url is not None
            command += [
                "--redis-url",
                self.redis_url,
                "--namespace",
                namespace or f"ns{os.getpid()}x{self._count}x{port}",
            ]
        command += list(args)
        log_path = self.folder / f"serve-{self._count}-{port}.log"
        environment = {**os.environ, "TUNGSTEN_HOME": str(self.home), **(env or {})}
        environment.pop("TUNGSTEN_REDIS_URL", None)
        environment.pop("REDIS_URL", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=cwd)
        server = Server(process, port, log_path)
        self.servers.append(server)
        if ready:
            server.wait_ready(workers=workers) if workers else server.wait_listening()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def descendants(pid: int) -> set[int]:
    """The ids of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def api_pid(server: Server) -> int:
    """The API process of a `tungsten serve` with one API process."""
    (pid,) = [p for p in descendants(server.process.pid) if b"_api" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return pid


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the server, for what an HTTP client library would not send."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def head(method: str, path: str, length: int | None = None, content_type: str = "application/json") -> bytes:
    """An HTTP/1.1 request head (with ``Content-Length`` when ``length`` is given)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if length is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One response from a raw connection: status, headers (lower-case names) and body
    (decoded when it is JSON)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without a whole response head: {data!r}")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    body: Any = rest[:length]
    if headers.get("content-type", "").startswith("application/json"):
        body = json.loads(body)
    return int(status_line.split()[1]), headers, body


def pace(seconds: float) -> None:
    """Wait between the sends of a deliberately slow client: its pace, not a synchronisation."""
    _pause.wait(seconds)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` seconds (whatever it sent first)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed as well
    return True
