"""Errors that Redis answers with (rather than connection failures) reach clients as 503
with Retry-After, never as a 500: Redis full (``maxmemory`` with no eviction) and Redis
read-only (a replica, as during a failover)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import MODELS, Server, ServerFactory
from tungstenkit._redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: the tests change its configuration."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port(), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder: Path = tmp_path_factory.mktemp("servers")
    factory = ServerFactory(folder, own_redis.url, folder / "home")
    yield factory(MODELS / "recorder", workers=0)
    factory.stop_all()


@pytest.fixture
def admin(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.config_set("maxmemory", 0)
    client.replicaof("NO", "ONE")
    client.close()


def test_a_full_redis_makes_post_answer_503_with_retry_after(server: Server, admin: redis.Redis) -> None:
    accepted = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    admin.config_set("maxmemory", 1)  # every write is now refused: OOM command not allowed
    for path in ("/predictions", "/predict"):
        response = server.client.post(path, json=[{"x": 2}])
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "2"
        assert response.json()["detail"] == "The prediction queue is full and takes no new predictions; retry later"
    assert server.client.get(f"/predictions/{accepted}").status_code == 200  # reads still work
    admin.config_set("maxmemory", 0)
    assert server.client.post("/predictions", json=[{"x": 3}]).status_code == 200


def test_a_read_only_redis_makes_post_answer_503(server: Server, admin: redis.Redis) -> None:
    admin.replicaof("127.0.0.1", free_port())  # a replica of nobody: read-only, as in a failover
    response = server.client.post("/predictions", json=[{"x": 4}])
    assert response.status_code == 503, response.text
    assert "read-only" in response.json()["detail"] and response.headers["Retry-After"] == "2"
    admin.replicaof("NO", "ONE")
    assert server.client.post("/predictions", json=[{"x": 5}]).status_code == 200
