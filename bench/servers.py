"""Starting and stopping the servers under test, and naming their processes.

- ``Redis``: a bench-owned ``redis-server`` on a free loopback port, without a password
  or persistence, so that the load generator can read ``INFO commandstats``.
- ``OurServer``: ``tungsten serve MODEL --redis-url ...`` (the supervisor starts the API
  and the workers), from the bench's interpreter.
- ``TungstenkitServer``: ``python -m tungstenkit._internal.model_server -p PORT -b MAX``
  run from the model's folder with ``bench/.venv-tk`` (see ``setup_tungstenkit.sh``).

Each server reports ``pids()``: a name per process of its tree (``api``, ``worker-1``,
``redis``; ``tk-server``, ``tk-worker``) for CPU accounting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TK_PYTHON = BENCH / ".venv-tk" / "bin" / "python"


def model_class_name(folder: Path, module: str = "tungsten_model") -> str:
    """The class decorated with ``@define_model`` in the folder's module (Tungstenkit wants it named)."""
    source = (folder / f"{module}.py").read_text()
    found = re.findall(r"@define_model\([^@]*?\)\s*\nclass\s+(\w+)", source, flags=re.DOTALL)
    if len(found) != 1:
        raise ValueError(f"expected one @define_model class in {folder}, found {found}")
    return found[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what}: the process exited with {process.returncode}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Redis:
    """A password-less, non-persistent redis-server of the bench's own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Redis:
        executable = shutil.which("redis-server")
        if executable is None:
            from tungstenkit._redis_server import find_redis_server

            executable = find_redis_server()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(answers, 15, "redis-server", self.process)
        return self

    def stop(self) -> None:
        _stop(self.process)


class OurServer:
    """``tungsten serve`` with a bench-owned Redis."""

    mode = "longpoll"

    def __init__(
        self,
        model: Path,
        folder: Path,
        *,
        workers: int = 1,
        batch_size: int | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        port: int | None = None,
        api_procs: int = 1,
        root: Path = ROOT,
        kind: str = "ours",
    ) -> None:
        self.model = model
        self.api_procs = api_procs
        self.extra: list[tuple[subprocess.Popen, int]] = []
        self.folder = folder
        self.workers = workers
        self.batch_size = batch_size
        self.env = env or {}
        self.python = python
        #: The checkout it runs from (``--baseline`` runs another one, with its own venv).
        self.root = root
        self.kind = kind
        self.port = port or free_port()
        self.main_url = f"http://127.0.0.1:{self.port}"
        self.url = self.main_url
        self.redis = Redis(folder / "redis")
        self.process: subprocess.Popen | None = None
        self.log = folder / f"{kind}-{model.name}-{self.port}.log"

    @property
    def redis_address(self) -> str:
        return self.redis.address

    def start(self, timeout: float = 120) -> OurServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        command = [
            self.python,
            "-m",
            "tungstenkit.cli",
            "serve",
            str(self.model),
            "-p",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--workers",
            str(self.workers),
            "--redis-url",
            self.redis.url,
            "--namespace",
            "bench",
            "--log-level",
            "warning",
        ]
        if self.batch_size:
            command += ["--batch-size", str(self.batch_size)]
        env = {**os.environ, "TUNGSTEN_HOME": str(self.folder / "home"), **self.env}
        env.pop("TUNGSTEN_REDIS_URL", None)
        env.pop("REDIS_URL", None)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env)

        def ready(url: str) -> bool:
            reply = http_get(url + "/health")
            return reply is not None and reply[0] == 200 and json.loads(reply[1])["ready_workers"] >= self.workers

        wait_until(lambda: ready(self.main_url), timeout, f"tungsten serve {self.model.name}", self.process, self.log)
        # More API processes: API-only `tungsten serve --workers 0` on the same Redis and
        # namespace; the load generator spreads its clients over every API (``url`` lists them).
        urls = [self.main_url]
        for _ in range(self.api_procs - 1):
            port = free_port()
            log = self.folder / f"ours-api-{port}.log"
            extra = [
                self.python,
                "-m",
                "tungstenkit.cli",
                "serve",
                str(self.model),
                "-p",
                str(port),
                "--host",
                "127.0.0.1",
                "--workers",
                "0",
                "--redis-url",
                self.redis.url,
                "--namespace",
                "bench",
                "--log-level",
                "warning",
            ]
            if self.batch_size:
                extra += ["--batch-size", str(self.batch_size)]
            with log.open("wb") as out:
                process = subprocess.Popen(extra, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, env=env)
            self.extra.append((process, port))
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda url=url: ready(url), timeout, f"API-only tungsten serve on {port}", process, log)
            urls.append(url)
        self.url = ",".join(urls)
        return self

    def pids(self) -> dict[str, int]:
        assert self.process is not None and self.redis.process is not None
        names = {"supervisor": self.process.pid, "redis": self.redis.process.pid}
        workers = 0
        for pid in children(self.process.pid):
            argv = cmdline(pid)
            if "_api" in argv:
                names["api"] = pid
            elif "worker" in argv:
                workers += 1
                names[f"worker-{workers}"] = pid
        for index, (process, _) in enumerate(self.extra, start=2):
            for pid in children(process.pid):
                if "_api" in cmdline(pid):
                    names[f"api-{index}"] = pid
        return names

    def stop(self) -> None:
        for process, _ in self.extra:
            _stop(process, 30)
        _stop(self.process, 60)
        self.redis.stop()


class TungstenkitServer:
    """Tungstenkit 0.2.20's model server, run the way its container runs it."""

    kind = "tungstenkit"
    mode = "poll"
    redis_address = None

    def __init__(
        self,
        model: Path,
        folder: Path,
        *,
        batch_size: int = 32,
        class_name: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_level: str = "warning",
        python: Path = TK_PYTHON,
    ) -> None:
        self.python = python
        self.model = model
        self.folder = folder
        self.log_level = log_level
        self.batch_size = batch_size
        self.class_name = class_name
        self.env = env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = folder / f"tk-{model.name}-{self.port}.log"
        self._tmp: str | None = None

    @staticmethod
    def available() -> bool:
        return TK_PYTHON.exists()

    def start(self, timeout: float = 120) -> TungstenkitServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Tungstenkit writes input files and its temp dir into the working directory:
        # run it from a scratch copy of the model folder.
        self._tmp = tempfile.mkdtemp(prefix="tk-model-", dir=self.folder)
        workdir = Path(self._tmp) / self.model.name
        shutil.copytree(self.model, workdir, ignore=shutil.ignore_patterns("__pycache__"))
        env = {
            **os.environ,
            "TUNGSTEN_MODEL_MODULE": "tungsten_model",
            "TUNGSTEN_MODEL_CLASS": self.class_name or model_class_name(self.model),
            **self.env,
        }
        # --log-level warning (the default here): its best configuration, without its
        # per-prediction log lines; the uvicorn access log stays on, as Tungstenkit
        # offers no switch for it. Its own default is info.
        command = [
            str(self.python),
            "-m",
            "tungstenkit._internal.model_server",
            "-p",
            str(self.port),
            "-b",
            str(self.batch_size),
            "--log-level",
            self.log_level,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)

        def ready() -> bool:
            reply = http_get(self.url + "/")
            return reply is not None and reply[0] == 200

        wait_until(ready, timeout, f"tungstenkit {self.model.name}", self.process, self.log)
        return self

    def pids(self) -> dict[str, int]:
        assert self.process is not None
        names = {"tk-server": self.process.pid}
        others = 0
        for pid in children(self.process.pid):
            argv = " ".join(cmdline(pid))
            if "resource_tracker" in argv:
                names["tk-resource-tracker"] = pid
            elif "spawn_main" in argv and "tk-worker" not in names:
                names["tk-worker"] = pid
            else:
                others += 1
                names[f"tk-other-{others}"] = pid
        return names

    def stop(self) -> None:
        _stop(self.process, 30)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
