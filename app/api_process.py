"""The API process of ``tungsten serve``: uvicorn serving the Starlette app."""

from __future__ import annotations

import functools
import logging
import socket
import threading
from types import FrameType

import uvicorn

from tungstenkit._log_safety import AccessLogQueryFilter
from tungstenkit._logging import configure_logging
from tungstenkit._process import announce_ready
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource
from tungstenkit.app.http_protocol import ConnectionGuard, ConnectionLimits, GuardedHttpProtocol
from tungstenkit.app.memory import return_large_blocks_to_the_system
from tungstenkit.app.server import create_app

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, refuse new predictions with 503 for ``drain_s``
    (a load balancer moves on, clients retry), then shut down as uvicorn does.

    A second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, drain_s: float, ready_fd: int | None = None) -> None:
        super().__init__(config)
        self._drain_s = drain_s
        self._draining = False
        self._ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._ready_fd is not None and self.started:
            announce_ready(self._ready_fd)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        serving = getattr(self.config.app, "state", None)
        if self._draining or self._drain_s <= 0 or serving is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        logger.info("Draining: refusing new predictions for %.1fs before stopping", self._drain_s)
        serving.serving.start_draining()
        timer = threading.Timer(self._drain_s, super().handle_exit, args=(sig, frame))
        timer.daemon = True
        timer.start()


def run_api(
    source: ModelSource,
    settings: Settings,
    *,
    redis_url: str,
    namespace: str,
    host: str,
    port: int,
    log_level: str,
    batch_size: int | None,
    ready_fd: int | None = None,
    reuse_port: bool = False,
    quiet_start: bool = False,
) -> None:
    """Serve the API. With ``reuse_port``, several such processes share the port."""
    configure_logging(log_level, "api", settings.log_format)
    return_large_blocks_to_the_system()
    definition = source.load()
    app = create_app(
        definition,
        settings,
        redis_url=redis_url,
        namespace=namespace,
        model_name=source.reference,
        batch_size=batch_size,
    )
    guard = ConnectionGuard(ConnectionLimits.from_settings(settings))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvicorn's own trace level logs every ASGI message, query strings (tokens) and all;
        # ours logs batches, so uvicorn stays at debug.
        log_level="debug" if log_level == "trace" else log_level,
        # Access lines cost a measurable share of the API's CPU: only when asked for.
        access_log=log_level in ("debug", "trace"),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        # Head and body deadlines, a head size limit, and connection slots that idle
        # clients give up (uvicorn has none of these); see app.http_protocol.
        # (uvicorn types it as a protocol class; it only calls it, as it calls a class)
        http=functools.partial(GuardedHttpProtocol, guard=guard),  # type: ignore[arg-type]
        # JSON logs: uvicorn's own lines go through the same JSON handler.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    logging.getLogger("uvicorn.access").addFilter(AccessLogQueryFilter())  # after Config set logging up
    server = DrainingServer(config, settings.drain_s, ready_fd)
    if not reuse_port:
        server.run()
        return
    sock = _shared_socket(host, port)
    if not quiet_start:
        # uvicorn says where it listens only for sockets it opened itself.
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", "[" + host + "]" if ":" in host else host, port
        )
    server.run(sockets=[sock])


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other API processes bind too (the kernel balances them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
