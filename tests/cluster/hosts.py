"""The product's real processes on the hosts of a ``Network``: Redis, `tungsten serve
--workers 0` (the API) and `tungsten worker`, and HTTP from the client host.

Redis listens on its host's address on the back network, with a password (protected
mode on); the API on its front address. Every process logs to a file of the test's
folder and is stopped by ``Cluster.stop_all`` (and, should the suite die, by the parent
death signal and ``Network.destroy``).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.cluster.netns import Host, Network
from tests.support import ROOT, pings, wait_for
from tungstenkit._redis_server import find_redis_server

REDIS_PORT = 6379
API_PORT = 3000


@dataclass
class Process:
    """A process started in a host, with its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Api:
    """The API as the client host reaches it: every request goes from a thread inside
    that host's namespace (``client`` is for such threads only)."""

    url: str
    host: Host
    process: Process
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.host.call(self.client.request, method, path, **kwargs)

    def health(self) -> dict[str, Any] | None:
        """``/health``'s answer (200, or 503 while no worker is ready); None if none came."""
        try:
            response = self.request("GET", "/health", timeout=2)
        except httpx.TransportError:
            return None
        return response.json()  # type: ignore[no-any-return]

    def wait_ready(self, workers: int, timeout_s: float = 90.0) -> None:
        def ready() -> bool:
            if not self.process.alive():
                raise AssertionError(f"tungsten serve exited:\n{self.process.log()}")
            health = self.health()
            return health is not None and health.get("ready_workers", 0) >= workers

        wait_for(ready, timeout_s, interval=0.1, what=f"the API with {workers} ready workers")

    def counter(self, name: str, outcome: str) -> float:
        """A counter of ``/metrics`` (``tungsten_inputs``, ``success``)."""
        text = self.request("GET", "/metrics").text
        found = re.search(rf'^{name}_total\{{outcome="{outcome}"\}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def close(self) -> None:
        self.client.close()


class Cluster:
    """Redis, the API and the workers of one test, on ``network`` (hosts ``redis``,
    ``api``, ``client`` and the workers'), in namespace ``namespace`` of Redis."""

    def __init__(self, network: Network, folder: Path, namespace: str, env: dict[str, str] | None = None) -> None:
        self.network = network
        self.folder = folder
        self.namespace = namespace
        self.env = env or {}
        self.password = secrets.token_hex(16)
        self.processes: list[Process] = []
        self.apis: list[Api] = []

    @property
    def redis_address(self) -> str:
        return self.network["redis"].address("back")

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.password}@{self.redis_address}:{REDIS_PORT}/0"

    def _start(
        self, host: str, name: str, command: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
    ) -> Process:
        log_path = self.folder / f"{name}.log"
        environment = {**os.environ, "TUNGSTEN_HOME": str(self.folder / "home"), **self.env, **(env or {})}
        environment.pop("TUNGSTEN_REDIS_URL", None)
        environment.pop("REDIS_URL", None)
        with log_path.open("wb") as log:
            popen = self.network[host].popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=ROOT,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            )
        if stdin is not None:
            assert popen.stdin is not None
            popen.stdin.write(stdin)
            popen.stdin.close()
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_redis(self) -> Process:
        """redis-server on the Redis host's address, password required; no persistence.
        The config (the password in it) goes through stdin, as ``tungsten serve`` does."""
        config = "\n".join(
            [
                f"bind {self.redis_address}",
                f"port {REDIS_PORT}",
                f"requirepass {self.password}",
                "protected-mode yes",
                f"dir {self.folder}",
                'save ""',
                "appendonly no",
                "maxmemory-policy noeviction",
                "",
            ]
        )
        process = self._start("redis", "redis", [find_redis_server(), "-"], stdin=config.encode())

        def answers() -> bool:
            if not process.alive():
                raise AssertionError(f"redis-server exited:\n{process.log()}")
            return pings(redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1))

        wait_for(lambda: self.network["redis"].call(answers), 30, interval=0.05, what="redis-server")
        return process

    def start_api(self, model: Path, env: dict[str, str] | None = None) -> Api:
        address = self.network["api"].address("front")
        command = [
            sys.executable,
            "-m",
            "tungstenkit.cli",
            "serve",
            str(model),
            "--workers",
            "0",
            "--redis-url",
            self.redis_url,
            "--namespace",
            self.namespace,
            "--host",
            address,
            "-p",
            str(API_PORT),
        ]
        process = self._start("api", "api", command, {"TUNGSTEN_WEBHOOK_WORKERS": "0", **(env or {})})
        api = Api(f"http://{address}:{API_PORT}", self.network["client"], process)
        self.apis.append(api)
        wait_for(lambda: api.health() is not None or not process.alive(), 90, interval=0.1, what="the API to listen")
        if not process.alive():
            raise AssertionError(f"tungsten serve exited:\n{process.log()}")
        return api

    def start_worker(self, host: str, model: Path, *args: str, env: dict[str, str] | None = None) -> Process:
        command = [
            sys.executable,
            "-m",
            "tungstenkit.cli",
            "worker",
            str(model),
            "--redis-url",
            self.redis_url,
            "--namespace",
            self.namespace,
            *args,
        ]
        return self._start(host, f"worker-{host}", command, env)

    def stop_all(self) -> None:
        for api in self.apis:
            api.close()
        for process in reversed(self.processes):
            process.stop()
