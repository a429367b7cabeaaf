"""Reaching Redis at start: tried again with backoff until the deadline, except where
another try cannot help (a refused password)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tungstenkit._errors import RedisUnavailable
from tungstenkit._queue import close_sync, connect
from tungstenkit._redis_server import RedisServer, free_port


def test_a_redis_that_comes_up_late_is_reached(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, port=free_port(), persistent=False)
    starter = threading.Timer(0.5, server.start)  # after the first tries have failed
    starter.start()
    try:
        client = connect(server.url, timeout_s=60)
        assert client.ping()
        close_sync(client)
    finally:
        starter.join()
        server.stop()


def test_a_refused_password_fails_at_once(redis_server: RedisServer) -> None:
    url = redis_server.url.replace(redis_server.password, "not-the-password")
    began = time.monotonic()
    with pytest.raises(RedisUnavailable, match="refused the password"):
        connect(url, timeout_s=60)
    assert time.monotonic() - began < 30  # not tried again until the deadline


def test_an_unreachable_redis_fails_after_the_deadline() -> None:
    with pytest.raises(RedisUnavailable, match="Cannot reach Redis at redis://127.0.0.1:1/0"):
        connect("redis://127.0.0.1:1/0", timeout_s=0.5)
