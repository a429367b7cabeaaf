"""The worker process: connect, load the model, set it up, serve batches until stopped."""

from __future__ import annotations

import logging

from tungstenkit._errors import ModelLoadError, RedisUnavailable, SetupFailed
from tungstenkit._logging import add_log_context, configure_logging
from tungstenkit._process import announce_ready
from tungstenkit._queue import Keys, connect
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource
from tungstenkit.worker.model_worker import EXIT_LOAD_FAILED, EXIT_REDIS_UNREACHABLE, EXIT_SETUP_FAILED, Worker

logger = logging.getLogger(__name__)


def run_worker(
    source: ModelSource,
    settings: Settings,
    *,
    redis_url: str,
    namespace: str,
    batch_size: int | None,
    log_level: str,
    ready_fd: int | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(log_level, "worker", settings.log_format)
    try:
        definition = source.load()
    except ModelLoadError as exc:
        logger.error("Cannot load the model: %s", exc)
        return EXIT_LOAD_FAILED
    try:
        client = connect(redis_url, settings.redis_connect_timeout_s)
    except RedisUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_REDIS_UNREACHABLE
    worker = Worker(definition, client, Keys(namespace), settings, batch_size=batch_size, model_name=source.reference)
    add_log_context(worker=worker.worker_id)
    worker.install_signal_handlers()
    try:
        worker.setup()
    except SetupFailed as exc:
        logger.error("%s", exc)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        return 0
    if ready_fd is not None:
        announce_ready(ready_fd)
    worker.run()
    return 0
