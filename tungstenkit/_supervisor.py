"""``tungsten serve``: start Redis (when embedded), the API and the workers, and keep them up.

The supervisor runs no model and serves no HTTP. It restarts a child that exits with
backoff, and on SIGINT/SIGTERM stops the API first (no new work), then the workers
(they finish their batch and hand back the rest), then Redis. When it sees a worker
exit, it releases that worker's entries at once (live workers take them over) rather
than leaving them until the worker's heartbeat would have expired.

Why our own rather than a process manager (supervisord, honcho, an init system): ``tungsten
serve`` is one command that works as it is in a container. What it does beyond restarting
is the product's own: reading a worker's exit code (a model that cannot load stops the
server with its reason rather than restarting in a loop), releasing a dead worker's
entries in Redis, and stopping the children in the order that loses no prediction.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import redis

from tungstenkit._errors import ConfigError, RedisServerError, TungstenError
from tungstenkit._process import die_with_parent
from tungstenkit._queue import (
    REDIS_ERRORS,
    Keys,
    KeyStore,
    Role,
    WorkerQueue,
    close_sync,
    connect,
    eviction_warning,
    publish_model_digest,
    sync_client,
    users,
    worker_id_for,
)
from tungstenkit._redis_server import URL_FILE, RedisServer, embedded_redis_dir, maxmemory_bytes, write_url_file
from tungstenkit._settings import ENV_REDIS_URL, Settings
from tungstenkit._store import ModelSource
from tungstenkit._supervised_thread import EXIT_THREAD_FAILED

logger = logging.getLogger(__name__)

#: Worker exit codes meaning the model itself cannot start (see ``tungstenkit.worker.model_worker``).
_EXIT_LOAD_FAILED = 3
_EXIT_MODEL_MISMATCH = 7
_FATAL_WORKER_EXITS = {
    _EXIT_LOAD_FAILED: "could not load the model",
    4: "setup() failed",
    5: "could not reach Redis",
    _EXIT_MODEL_MISMATCH: "found the namespace serving another model",
}
#: Why a worker that is restarted exited, by exit code (for the log).
_WORKER_EXIT_REASONS = {
    6: "its model did not return to Python after a timeout",
    8: "it used more memory than TUNGSTEN_WORKER_MAX_MEMORY_MB",
    EXIT_THREAD_FAILED: "one of its threads died",
}
#: How a child process starts: this Python, running the CLI. ``-P`` keeps the working
#: directory off ``sys.path``: a folder there named ``tungstenkit`` (a checkout, the source
#: folder of an image) must not hide the installed package. (Python 3.10 has no ``-P``.)
_CHILD_CLI = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "tungstenkit.cli"]
#: A child that ran this long before exiting starts again without delay.
_HEALTHY_RUN_S = 30.0
_MAX_BACKOFF_S = 30.0
#: Seconds the supervisor waits on Redis when releasing a dead worker's entries.
_RELEASE_TIMEOUT_S = 2.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc} (is another server using it?)"
            ) from None


@dataclass
class Child:
    """A supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    #: Workers say on a pipe when their model is set up.
    reports_ready: bool = False
    #: Workers get a fresh tag at each start, which ends their id (``host:pid:tag``).
    is_worker: bool = False
    tag: str = ""
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    next_start_at: float = 0.0
    starts: int = 0
    ready: bool = False
    ever_ready: bool = False
    _ready_pipe: int | None = None

    def start(self) -> None:
        argv = list(self.argv)
        pass_fds: tuple[int, ...] = ()
        self._close_pipe()
        self.ready = False
        if self.reports_ready:
            self._ready_pipe, write_end = os.pipe()
            os.set_blocking(self._ready_pipe, False)
            argv += ["--ready-fd", str(write_end)]
            pass_fds = (write_end,)
        if self.is_worker:
            self.tag = uuid.uuid4().hex[:6]
            argv += ["--worker-tag", self.tag]
        try:
            self.process = subprocess.Popen(
                argv,
                env=self.env,
                pass_fds=pass_fds,
                # Its own session: a terminal's Ctrl+C reaches only the supervisor, which
                # then stops the children in order.
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509
            )
        finally:
            for fd in pass_fds:
                os.close(fd)
        self.started_at = time.monotonic()
        self.starts += 1
        logger.debug("Started %s (pid %d)", self.name, self.process.pid)

    def check_ready(self) -> bool:
        """Whether the child has said it is ready (reads its pipe without blocking)."""
        if not self.ready and self._ready_pipe is not None:
            try:
                self.ready = b"ready" in os.read(self._ready_pipe, 64)
                self.ever_ready = self.ever_ready or self.ready
            except BlockingIOError:
                pass
            except OSError:
                self._close_pipe()
        return self.ready

    def _close_pipe(self) -> None:
        if self._ready_pipe is not None:
            os.close(self._ready_pipe)
            self._ready_pipe = None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def worker_id(self) -> str | None:
        """The id of the worker this child runs (or ran), if it is one."""
        if not self.is_worker or self.process is None:
            return None
        return worker_id_for(self.process.pid, self.tag)

    def schedule_restart(self) -> float:
        """Restart at once after a long healthy run, else back off 1, 2, 4 ... 30 s."""
        ran = time.monotonic() - self.started_at
        self.failures = 0 if ran >= _HEALTHY_RUN_S else self.failures + 1
        delay = min(2.0 ** (self.failures - 1), _MAX_BACKOFF_S) if self.failures else 0.0
        self.next_start_at = time.monotonic() + delay
        self.process = None
        return delay

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass


@dataclass
class ServeOptions:
    host: str = "0.0.0.0"  # the seed serves on all interfaces
    port: int = 3000
    workers: int = 1
    #: API processes sharing the port (the kernel spreads connections over them).
    api_processes: int = 1
    #: GPUs to put workers on (``CUDA_VISIBLE_DEVICES`` of each); empty: leave it alone.
    gpus: tuple[str, ...] = ()
    batch_size: int | None = None
    log_level: str = "info"
    namespace: str = ""
    #: Called once, when the API listens and a worker has the model loaded (or, with no
    #: workers, when the API listens): ``tungsten demo`` prints the page's address then.
    on_ready: Callable[[], None] | None = None


@dataclass
class Supervisor:
    source: ModelSource
    settings: Settings
    options: ServeOptions
    _stop: threading.Event = field(default_factory=threading.Event)
    _redis: RedisServer | None = None
    _lock_file: IO[str] | None = None
    _children: list[Child] = field(default_factory=list)
    _client: redis.Redis | None = None
    #: Whether any worker has had the model set up since the start.
    _served: bool = False
    exit_message: str | None = None

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM; returns the exit code."""
        self._install_signal_handlers()
        check_port_free(self.options.host, self.options.port)
        if not self.settings.api_keys and not is_loopback(self.options.host):
            logger.warning(
                "Listening on %s without API keys: anyone who reaches this port can run and read predictions. "
                "Set TUNGSTEN_API_KEYS=on and create keys with `tungsten keys create`, or listen on 127.0.0.1",
                self.options.host,
            )
        if self.settings.redis_tls and not self.settings.redis_url:
            raise ConfigError(
                f"{self.settings.redis_tls.settings_named()} is for a Redis reached with a rediss:// URL "
                "(--redis-url); the embedded Redis needs none"
            )
        if self.settings.redis_url:
            self._publish_model(self.settings.redis_url)  # also checks that Redis answers, before forking
        redis_url = self.settings.redis_url or self._start_embedded_redis()
        # The children log in as users of their own in the embedded Redis; an external
        # Redis gets the one URL given.
        urls = {role: self._redis.url_for(role.value) if self._redis else redis_url for role in Role}
        if self.options.gpus:
            logger.info(
                "Starting %d workers, %d per GPU, on GPU %s",
                self.options.workers,
                self.options.workers // len(self.options.gpus),
                ", ".join(self.options.gpus),
            )
        self._client = sync_client(
            redis_url,
            socket_timeout=_RELEASE_TIMEOUT_S,
            socket_connect_timeout=_RELEASE_TIMEOUT_S,
            tls=self.settings.redis_tls,
        )
        try:
            if not self.settings.redis_url:
                self._publish_model(redis_url)
            self._children = (
                [self._api_child(urls[Role.API], i) for i in range(self.options.api_processes)]
                + [self._worker_child(urls[Role.WORKER], i) for i in range(self.options.workers)]
                + [self._webhook_child(urls[Role.WEBHOOKS], i) for i in range(self.settings.webhook_workers)]
            )
            for child in self._children:
                child.start()
            return self._watch()
        finally:
            self._stop_children()
            if self._client is not None:
                close_sync(self._client)
            self._stop_embedded_redis()

    def stop(self) -> None:
        self._stop.set()

    def _publish_model(self, redis_url: str) -> None:
        """Say which model this namespace serves, before any worker starts and reads it;
        warn if this Redis evicts keys when full."""
        client = connect(redis_url, self.settings.redis_connect_timeout_s, self.settings.redis_tls)
        try:
            publish_model_digest(client, Keys(self.options.namespace), self.source.digest)
            warning = eviction_warning(client)
            no_keys = self.settings.api_keys and not KeyStore(client, Keys(self.options.namespace)).valid()
        finally:
            close_sync(client)
        if warning:
            logger.warning("%s", warning)
        if no_keys:
            logger.warning(
                "API keys are on and namespace %s has none yet: every request will get 401 until you create one "
                "(tungsten keys create --namespace %s --scope predict --name NAME)",
                self.options.namespace,
                self.options.namespace,
            )

    # -- children --------------------------------------------------------------------
    def _child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.to_env())
        env[ENV_REDIS_URL] = redis_url
        return env

    def _model_args(self) -> list[str]:
        source = self.source
        model = source.reference if source.tag else str(source.root)
        args = [
            model,
            "-m",
            source.module,
            "--namespace",
            self.options.namespace,
            "--log-level",
            self.options.log_level,
        ]
        if source.class_name:
            args += ["-c", source.class_name]
        if self.options.batch_size:
            args += ["--batch-size", str(self.options.batch_size)]
        return args

    def _api_child(self, redis_url: str, index: int) -> Child:
        argv = [*_CHILD_CLI, "_api", *self._model_args(), "--host", self.options.host]
        argv += ["--port", str(self.options.port)]
        if self.options.api_processes > 1:
            # Several processes listen on the port; the first says where.
            argv += ["--reuse-port"] + (["--quiet-start"] if index else [])
        name = "api" if self.options.api_processes == 1 else f"api-{index + 1}"
        return Child(name, argv, self._child_env(redis_url), reports_ready=True)

    def _worker_child(self, redis_url: str, index: int) -> Child:
        argv = [*_CHILD_CLI, "worker", *self._model_args()]
        env = self._child_env(redis_url)
        if self.options.gpus:
            # Workers take the GPUs in turn: with --workers-per-gpu 2, two share each.
            env["CUDA_VISIBLE_DEVICES"] = self.options.gpus[index % len(self.options.gpus)]
        return Child(f"worker-{index + 1}", argv, env, reports_ready=True, is_worker=True)

    def _webhook_child(self, redis_url: str, index: int) -> Child:
        argv = [*_CHILD_CLI, "_webhooks", "--namespace", self.options.namespace]
        argv += ["--log-level", self.options.log_level]
        return Child(f"webhooks-{index + 1}", argv, self._child_env(redis_url))

    def _announce_ready(self) -> None:
        callback = self.options.on_ready
        if callback is None:
            return
        apis = [c for c in self._children if c.name.startswith("api")]
        if all(c.ever_ready for c in apis) and (self._served or not self.options.workers):
            self.options.on_ready = None
            callback()

    def _watch(self) -> int:
        while not self._stop.wait(0.2):
            self._announce_ready()
            if self._redis is not None and not self._redis.is_running():
                self._restart_embedded_redis()
            now = time.monotonic()
            for child in self._children:
                if child.check_ready() and child.name.startswith("worker"):
                    self._served = True
                code = child.exit_code()
                if child.process is None:
                    if now >= child.next_start_at:
                        child.start()
                    continue
                if code is None:
                    continue
                self._release(child)
                fatal = self._fatal_reason(child, code)
                if fatal:
                    self.exit_message = fatal
                    return 1
                delay = child.schedule_restart()
                reason = _WORKER_EXIT_REASONS.get(code) if child.name.startswith("worker") else None
                logger.warning(
                    "%s exited with code %s%s; restarting in %.0fs",
                    child.name,
                    code,
                    f" ({reason})" if reason else "",
                    delay,
                )
        return 0

    def _release(self, child: Child) -> None:
        """A worker exited: release its entries now (see ``WorkerQueue.release``)."""
        worker_id = child.worker_id()
        if worker_id is None or self._client is None:
            return
        queue = WorkerQueue(self._client, Keys(self.options.namespace), result_ttl_s=self.settings.result_ttl_s)
        try:
            queue.release(worker_id)
        except REDIS_ERRORS as exc:
            # Its heartbeat expires instead, and its entries are taken over then.
            logger.warning("Could not release the entries of %s (%s)", child.name, exc)

    def _fatal_reason(self, child: Child, code: int) -> str | None:
        if child.name.startswith("webhooks"):
            return None  # deliveries wait in Redis; restarting with backoff is enough
        if child.name.startswith("api"):
            # An API that never came up is hopeless (bad port, broken model); one that
            # dies after listening is restarted like a worker.
            if not child.ever_ready:
                return f"The API process exited at start (code {code}); see its message above"
            return None
        reason = _FATAL_WORKER_EXITS.get(code)
        if reason is None:
            return None
        # A model that never got going will not on retry: stop with its reason. Once the
        # server has served, a worker that fails to come back (GPU memory, a flaky
        # download) is retried with backoff and shows as failed in /health.
        if code in (_EXIT_LOAD_FAILED, _EXIT_MODEL_MISMATCH) or not self._served:
            return f"{child.name} {reason}; see its message above"
        logger.error("%s %s; retrying with backoff", child.name, reason)
        return None

    def _stop_children(self) -> None:
        api = [c for c in self._children if c.name.startswith("api")]
        workers = [c for c in self._children if c.name.startswith("worker")]
        webhooks = [c for c in self._children if c.name.startswith("webhooks")]
        # Webhook workers last: they deliver what the stopping workers finish.
        for group in (api, workers, webhooks):
            for child in group:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + self.settings.shutdown_grace_s + 5
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in time; killing it", child.name)
                    child.process.kill()
                    child.process.wait()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: object) -> None:
            if self._stop.is_set():
                return
            logger.info("Shutting down (%s)", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    # -- embedded Redis --------------------------------------------------------------
    def _start_embedded_redis(self) -> str:
        data_dir = embedded_redis_dir(self.settings.home, self.options.namespace)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (data_dir / "serve.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"Another `tungsten serve` is using {data_dir}; stop it, or give this one --redis-url "
                "or another TUNGSTEN_HOME"
            ) from None
        self._redis = RedisServer(
            data_dir,
            users=users(Keys(self.options.namespace)),
            die_with_parent=True,
            appendfsync=self.settings.redis_appendfsync,
            maxmemory=maxmemory_bytes(self.settings.redis_maxmemory),
        )
        self._redis.start()
        write_url_file(data_dir, self._redis.url)
        logger.info("Embedded Redis ready (data in %s)", data_dir)
        return self._redis.url

    def _restart_embedded_redis(self) -> None:
        assert self._redis is not None
        logger.warning("The embedded Redis exited; restarting it from its append-only file")
        self._redis.stop()
        try:
            self._redis.start()
        except RedisServerError as exc:
            logger.error("%s", exc)
            time.sleep(1)

    def _stop_embedded_redis(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            (self._redis.data_dir / URL_FILE).unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()


def serve(source: ModelSource, settings: Settings, options: ServeOptions) -> None:
    """Run ``tungsten serve``; raises ``TungstenError`` with a one-line reason on failure."""
    logger.info("Serving %s", source.description)
    supervisor = Supervisor(source, settings, options)
    code = supervisor.run()
    if code != 0:
        raise TungstenError(supervisor.exit_message or f"tungsten serve stopped with code {code}")


__all__ = ["ServeOptions", "Supervisor", "check_port_free", "serve"]
