"""The worker process: connect, load the model, set it up, serve batches until stopped."""

from __future__ import annotations

import logging

import redis

from tungstenkit._errors import ModelLoadError, RedisUnavailable, SetupFailed
from tungstenkit._logging import add_log_context, configure_logging
from tungstenkit._process import announce_ready
from tungstenkit._queue import CONNECTION_ERRORS, Keys, connect, eviction_warning, served_model_digest
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource
from tungstenkit.worker.model_worker import (
    EXIT_LOAD_FAILED,
    EXIT_MODEL_MISMATCH,
    EXIT_REDIS_UNREACHABLE,
    EXIT_SETUP_FAILED,
    Worker,
)

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
    tag: str = "",
) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the process exit code.

    ``tag`` ends the worker's id (``host:pid:tag``); ``tungsten serve`` chooses it.
    """
    configure_logging(log_level, "worker", settings.log_format)
    try:
        definition = source.load()
    except ModelLoadError as exc:
        logger.error("Cannot load the model: %s", exc)
        return EXIT_LOAD_FAILED
    try:
        client = connect(redis_url, settings.redis_connect_timeout_s, settings.redis_tls)
    except RedisUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_REDIS_UNREACHABLE
    keys = Keys(namespace)
    if not _same_model(client, keys, source):
        client.close()
        return EXIT_MODEL_MISMATCH
    warning = eviction_warning(client)
    if warning:
        logger.warning("%s", warning)
    worker = Worker(definition, client, keys, settings, batch_size=batch_size, model_name=source.reference, tag=tag)
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
    return worker.exit_code


def _same_model(client: redis.Redis, keys: Keys, source: ModelSource) -> bool:
    """Whether this worker's model is the one the namespace's API serves (by digest)."""
    try:
        served = served_model_digest(client, keys)
    except CONNECTION_ERRORS as exc:
        logger.warning("Could not read which model namespace %s serves (%s): joining unchecked", keys.namespace, exc)
        return True
    if served is None or served == source.digest:
        return True
    if source.digest is None:
        logger.warning(
            "Namespace %s serves the model %s; this worker's model, from a folder, has no digest to compare",
            keys.namespace,
            served,
        )
        return True
    logger.error(
        "Namespace %s serves the model %s, but this worker has %s (%s): refusing to join, so that one API's "
        "predictions do not run on two models (serve the same model, or give --namespace)",
        keys.namespace,
        served,
        source.reference,
        source.digest,
    )
    return False
