"""The worker as a whole: a worker whose Redis thread died stops, rather than living on half alive."""

from __future__ import annotations

import threading

import pytest
import redis

from tests.support import MODELS
from tungstenkit._loader import load_model
from tungstenkit._queue import EntryResult, Keys
from tungstenkit._settings import Settings
from tungstenkit._supervised_thread import EXIT_THREAD_FAILED
from tungstenkit.worker.model_worker import Worker


def test_a_worker_whose_writer_died_stops_with_a_non_zero_code(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    worker = Worker(load_model(MODELS / "recorder"), client, Keys(namespace), Settings(shutdown_grace_s=5))
    worker.setup()
    running = threading.Thread(target=worker.run)
    running.start()

    def broken() -> list[EntryResult]:
        raise RuntimeError("a bug")

    worker._writer.batch_ended(1, broken, False)  # a batch's results cannot be worked out
    running.join(30)
    try:
        assert not running.is_alive()
        assert worker.exit_code == EXIT_THREAD_FAILED
        assert "Thread tungsten-writer died: RuntimeError: a bug" in caplog.text
        assert not client.exists(Keys(namespace).worker(worker.worker_id))  # it unregistered
    finally:
        client.close()
