"""Redis and API outages, overload, and a full stop and start, under load."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from tests.faults.load import Load
from tests.support import MODELS, Server, ServerFactory, wait_for
from tests.test_serve import _alive, _descendants
from tungstenkit._redis_server import RedisServer, free_port


def _child(server: Server, marker: str) -> int | None:
    """The pid of serve's child whose command line contains ``marker``, if running."""
    for pid in _descendants(server.process.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker in cmdline.read().replace(b"\0", b" ").decode(errors="replace") and _alive(pid):
                    return pid
        except OSError:
            continue
    return None


def _assert_nothing_lost(report) -> None:
    assert report.lost == 0, report
    assert report.wrong_outputs == 0, report
    assert report.duplicated_inputs == 0, report
    assert report.completed + sum(report.failed.values()) == report.accepted


def test_embedded_redis_killed_under_load(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", embedded_redis=True, env={"RECORDER_AUDIT": str(audit)})
    load = Load(server.url, clients=4, hold=0.05).start()
    load.wait_accepted(30)
    first = _child(server, "redis-server")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not _alive(first), 10)
    replacement = wait_for(lambda: _child(server, "redis-server"), 30, what="a new redis-server")
    assert replacement != first
    load.wait_accepted(len(load.accepted) + 30, timeout=60)
    load.stop()
    report = load.settle(server, "kill -9 the embedded Redis", audit)
    _assert_nothing_lost(report)
    assert report.completed == report.accepted
    assert "The embedded Redis exited; restarting it" in server.log()


def test_api_killed_under_load(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})
    load = Load(server.url, clients=4, hold=0.05).start()
    load.wait_accepted(30)
    api = _child(server, "cli _api")
    assert api is not None
    os.kill(api, signal.SIGKILL)
    load.wait_accepted(len(load.accepted) + 30, timeout=60)  # the supervisor brought it back
    load.stop()
    report = load.settle(server, "kill -9 the API", audit)
    _assert_nothing_lost(report)
    assert report.completed == report.accepted
    assert sum(report.refused.values()) > 0  # clients saw it go away


def test_twice_the_sustainable_load_is_refused_not_queued(serve: ServerFactory, tmp_path: Path, redis_url: str) -> None:
    audit = tmp_path / "audit.log"
    limit = 24
    server = serve(
        MODELS / "recorder",
        namespace="overload",
        env={"RECORDER_AUDIT": str(audit), "TUNGSTEN_MAX_QUEUED_INPUTS": str(limit)},
    )
    # One worker, batches of up to 4 inputs holding 0.1 s: about 40 inputs/s at most.
    # Eight clients submitting 2 inputs every 0.1 s offer about 80 (and more while refused).
    load = Load(server.url, clients=8, hold=0.1, pace=0.1).start()
    client = redis.Redis.from_url(redis_url)
    depths = []
    try:
        wait_for(
            lambda: depths.append(int(client.get("tungsten:{overload}:queued") or 0)) or len(depths) > 300,
            60,
            interval=0.01,
            what="queue depth samples",
        )
    finally:
        load.stop()
        client.close()
    assert max(depths) <= limit
    assert load.refused["429"] > 0
    report = load.settle(server, "offer twice the sustainable load", audit)
    _assert_nothing_lost(report)
    assert report.completed == report.accepted
    response = server.client.post("/predictions", json=[{"x": 1}] * (limit + 1))
    assert response.status_code == 429 and response.headers["Retry-After"]


def test_sigterm_under_load_then_start_again(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    env = {"RECORDER_AUDIT": str(audit)}
    first = serve(MODELS / "recorder", embedded_redis=True, workers=2, env=env)
    load = Load(first.url, clients=4, hold=0.3).start()
    load.wait_accepted(40)
    assert first.stop(signal.SIGTERM) == 0
    load.stop()
    second = serve(MODELS / "recorder", embedded_redis=True, workers=2, env=env)
    report = load.settle(second, "SIGTERM the whole server mid-load, start it again", audit)
    _assert_nothing_lost(report)
    assert report.completed == report.accepted
    assert "Handed" in first.log() or "draining" in first.log().lower()


def test_a_hung_redis_gives_503_in_bounded_time_not_a_hang(serve: ServerFactory, tmp_path: Path) -> None:
    private = RedisServer(tmp_path / "redis", port=free_port(), persistent=False)
    private.start()
    serve.redis_url = private.url
    server = serve(MODELS / "recorder")
    # Still running when Redis stops (a prediction that ended first may be answered from
    # the API's memory, without Redis).
    prediction_id = server.client.post("/predictions", json=[{"x": 1, "hold": 2}]).json()["prediction_id"]
    assert private.pid is not None
    os.kill(private.pid, signal.SIGSTOP)  # Redis accepts nothing and answers nothing
    try:
        started = time.monotonic()
        responses = [
            server.client.post("/predictions", json=[{"x": 2}], timeout=30),
            server.client.get(f"/predictions/{prediction_id}", timeout=30),
        ]
        assert [r.status_code for r in responses] == [503, 503]
        assert all(r.headers["Retry-After"] for r in responses)
        assert time.monotonic() - started < 25  # each within the API's 5 s Redis timeout
    finally:
        os.kill(private.pid, signal.SIGCONT)
    assert server.result(prediction_id)["status"] == "success"  # and all is well after
    server.stop()
    private.stop()
