"""Presumed dead is not dead: a paused worker, and a worker whose death serve sees."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import redis

from tests.faults.load import Load
from tests.faults.test_worker_crash import _busy_worker
from tests.support import MODELS, ServerFactory, wait_for


def _inputs_counted(server) -> int:
    """``tungsten_inputs_total{outcome="success"}`` as /metrics shows it."""
    text = server.client.get("/metrics").text
    found = re.search(r'^tungsten_inputs_total\{outcome="success"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _crash_fields(client: redis.Redis, namespace: str) -> dict[str, int]:
    """Every crash still counted against an input, by prediction hash and field."""
    found = {}
    for key in client.scan_iter(match=f"tungsten:{{{namespace}}}:pred:*", count=1000):
        for name, value in client.hgetall(key).items():
            if name.startswith(b"crashes:") and int(value):
                found[f"{key.decode()} {name.decode()}"] = int(value)
    return found


def test_a_paused_worker_fails_nothing_and_its_late_results_are_not_counted(
    serve: ServerFactory, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    audit = tmp_path / "audit.log"
    env = {"RECORDER_AUDIT": str(audit), "TUNGSTEN_HEARTBEAT_INTERVAL_S": "0.5", "TUNGSTEN_HEARTBEAT_TTL_S": "2"}
    server = serve(MODELS / "recorder", workers=2, namespace=namespace, env=env)
    load = Load(server.url, clients=4, hold=0.3, pace=0.3).start()
    load.wait_accepted(10)
    victim, _batch = _busy_worker(audit)
    os.kill(victim, signal.SIGSTOP)  # a GC pause, a VM stall: it is not dead
    try:
        wait_for(lambda: "Took over" in server.log(), 30, what="the other worker to take over")
        load.wait_accepted(len(load.accepted) + 10)
    finally:
        os.kill(victim, signal.SIGCONT)
    wait_for(lambda: "taken over by another worker" in server.log(), 30, what="the paused worker to wake up")
    load.stop()
    report = load.settle(server, "SIGSTOP a worker for twice the heartbeat TTL", audit)
    assert report.lost == 0 and report.wrong_outputs == 0
    assert report.completed == report.accepted  # a pause fails nothing
    inputs = sum(len(xs) for xs in load.accepted.values())
    # Each input counted once, though the paused worker ran some of them to the end too.
    wait_for(lambda: _inputs_counted(server) >= inputs, 10, what="the workers' metrics")
    assert _inputs_counted(server) == inputs
    client = redis.Redis.from_url(redis_url)
    try:
        assert _crash_fields(client, namespace) == {}  # the crash verdicts were withdrawn
    finally:
        client.close()


def test_a_worker_that_dies_is_released_at_once_not_after_its_heartbeat_ttl(
    serve: ServerFactory, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    audit = tmp_path / "audit.log"
    # A heartbeat that would take ten minutes to expire: only the supervisor's release
    # can hand the dead worker's inputs over in time.
    env = {"RECORDER_AUDIT": str(audit), "TUNGSTEN_HEARTBEAT_INTERVAL_S": "60", "TUNGSTEN_HEARTBEAT_TTL_S": "600"}
    server = serve(MODELS / "recorder", workers=2, namespace=namespace, env=env)
    load = Load(server.url, clients=4, hold=0.2, pace=0.2).start()
    load.wait_accepted(10)
    victim, _batch = _busy_worker(audit)
    os.kill(victim, signal.SIGKILL)
    load.wait_accepted(len(load.accepted) + 10)
    load.stop()
    report = load.settle(server, "kill -9 a worker, heartbeat TTL 600 s", audit, timeout=60)
    assert report.lost == 0 and report.wrong_outputs == 0 and report.duplicated_inputs == 0
    assert report.completed == report.accepted
    client = redis.Redis.from_url(redis_url)
    try:
        index = f"tungsten:{{{namespace}}}:workers"

        def only_live_workers() -> bool:
            listed = {w.decode() for w in client.zrange(index, 0, -1)}
            live = {w["id"] for w in server.client.get("/health").json()["workers"]}
            return len(live) == 2 and listed == live

        wait_for(only_live_workers, 60, interval=0.2, what="the workers index to hold exactly the live workers")
        assert not any(w.decode().split(":")[1] == str(victim) for w in client.zrange(index, 0, -1))
    finally:
        client.close()
