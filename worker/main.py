"""The worker process: connect, load the model, set it up, serve batches until stopped."""

from __future__ import annotations

import logging
import time

import redis

from tungstenkit._errors import ModelLoadError, RedisUnavailable, SetupFailed
from tungstenkit._logging import configure_logging
from tungstenkit._queue import CONNECTION_ERRORS, Keys
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource
from worker.worker import Worker

logger = logging.getLogger(__name__)

#: Exit codes the supervisor reads: the model cannot start, so restarting will not help.
EXIT_LOAD_FAILED = 3
EXIT_SETUP_FAILED = 4
EXIT_REDIS_UNREACHABLE = 5

#: How long a starting worker keeps trying to reach Redis before giving up.
CONNECT_TIMEOUT_S = 20.0


def connect(redis_url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=15, health_check_interval=30)
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            client.ping()
            return client
        except CONNECTION_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise RedisUnavailable(f"Cannot reach Redis at {_safe(redis_url)}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {_safe(redis_url)} refused the password: {exc}") from exc


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def run_worker(
    source: ModelSource,
    settings: Settings,
    *,
    redis_url: str,
    namespace: str,
    batch_size: int | None,
    log_level: str,
) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(log_level, "worker")
    try:
        definition = source.load()
    except ModelLoadError as exc:
        logger.error("Cannot load the model: %s", exc)
        return EXIT_LOAD_FAILED
    try:
        client = connect(redis_url)
    except RedisUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_REDIS_UNREACHABLE
    worker = Worker(definition, client, Keys(namespace), settings, batch_size=batch_size, model_name=source.reference)
    worker.install_signal_handlers()
    try:
        worker.setup()
    except SetupFailed as exc:
        logger.error("%s", exc)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        return 0
    worker.run()
    return 0
