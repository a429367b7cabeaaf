"""Redis memory: a bound on the embedded Redis, a warning for one that evicts, and workers
that keep their results while Redis is full."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.faults.load import Load
from tests.support import MODELS, ServerFactory, wait_for
from tungstenkit._redis_server import RedisServer, embedded_redis_dir


def test_the_embedded_redis_refuses_writes_past_its_maxmemory_rather_than_evicting(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", embedded_redis=True, env={"TUNGSTEN_REDIS_MAXMEMORY": "64mb"})
    url_file = embedded_redis_dir(serve.home, "recorder") / "redis.url"
    client = redis.Redis.from_url(url_file.read_text().strip())
    try:
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()
    server.stop()
    default = serve(MODELS / "recorder", embedded_redis=True)
    client = redis.Redis.from_url(url_file.read_text().strip())
    try:
        assert int(client.config_get("maxmemory")["maxmemory"]) > 0  # a quarter of the machine's memory
    finally:
        client.close()
    default.stop()


def test_serve_warns_when_its_redis_evicts_keys(serve: ServerFactory, private_redis: RedisServer) -> None:
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory", 1024**3)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    serve.redis_url = private_redis.url
    server = serve(MODELS / "recorder")
    assert "maxmemory-policy allkeys-lru" in server.log()
    assert "Set maxmemory-policy noeviction" in server.log()


def test_workers_keep_their_results_while_redis_is_full_and_run_nothing_twice(
    serve: ServerFactory, private_redis: RedisServer, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    serve.redis_url = private_redis.url
    server = serve(MODELS / "recorder", workers=2, env={"RECORDER_AUDIT": str(audit)})
    admin = redis.Redis.from_url(private_redis.url)
    load = Load(server.url, clients=4, hold=0.1, pace=0.1).start()
    try:
        load.wait_accepted(20)
        admin.config_set("maxmemory", 1)  # full: every write that needs memory is refused
        wait_for(lambda: "keeping them and retrying" in server.log(), 30, what="a worker to hold its results")
        admin.config_set("maxmemory", 0)
        load.wait_accepted(len(load.accepted) + 20)
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
        load.stop()
    report = load.settle(server, "Redis full (maxmemory) under load", audit, timeout=90)
    assert report.lost == 0 and report.wrong_outputs == 0
    assert report.duplicated_inputs == 0  # results kept and written later, not run again
    assert report.completed == report.accepted
    assert server.process.poll() is None
