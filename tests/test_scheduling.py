"""Priorities and fair shares between API key owners, against the real `tungsten serve`."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.support import MODELS, ServerFactory, audit_runs, tungsten, wait_for


def _starts(audit: Path) -> int:
    return len(audit_runs(audit))


def _batches_ahead(audit: Path, started_before: int, x: int) -> int:
    """How many batches started after the first ``started_before`` ones and before the one
    that ran input ``x``."""
    runs = audit_runs(audit)
    at = next(i for i, (_pid, xs) in enumerate(runs) if x in xs)
    return at - started_before


def _just_after_a_start(audit: Path, at_least: int) -> int:
    """Wait until at least ``at_least`` batches started, then for the next one to start;
    returns how many started. A request sent then arrives while that batch runs, not as
    it ends (where whether it came before the next batch started is a matter of timing)."""
    wait_for(lambda: _starts(audit) >= at_least, 20, what="the work to start")
    seen = _starts(audit)
    wait_for(lambda: _starts(audit) > seen, 20, interval=0.001, what="the next batch to start")
    return _starts(audit)


def test_a_high_priority_prediction_starts_within_a_batch_of_a_low_priority_queue(
    serve: ServerFactory, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})
    low = [{"x": 1000 + i, "hold": 0.05} for i in range(4)]
    for _ in range(40):  # 160 inputs, 40 batches of 4
        assert server.client.post("/predictions", params={"priority": "low"}, json=low).status_code == 200
    started_before = _just_after_a_start(audit, 2)
    urgent = server.client.post("/predictions", params={"priority": "high"}, json=[{"x": 7}])
    started_while_sent = _starts(audit) - started_before
    assert server.result(urgent.json()["prediction_id"])["status"] == "success"
    # Only the batch running when it came may run before it: the one its worker had read
    # ahead stepped aside. So no batch started before it but those that started while
    # it was on its way (counted from before it was sent), and at most one.
    assert _batches_ahead(audit, started_before, 7) <= min(1, started_while_sent)
    assert _starts(audit) < 30  # the low-priority queue was still long


def test_an_unknown_priority_is_422(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", workers=0)
    response = server.client.post("/predictions", params={"priority": "urgent"}, json=[{"x": 1}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "priority"]


def test_one_key_flooding_the_queue_does_not_delay_anothers_prediction_beyond_a_batch(
    serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    namespace = f"fair{uuid.uuid4().hex[:8]}"
    tokens = {}
    for name in ("alice", "bob"):
        done = tungsten("keys", "create", "--redis-url", redis_url, "--namespace", namespace, "--name", name)
        assert done.returncode == 0, done.stderr
        tokens[name] = {"Authorization": f"Bearer {done.stdout.strip()}"}
    audit = tmp_path / "audit.log"
    env = {"TUNGSTEN_API_KEYS": "on", "RECORDER_AUDIT": str(audit)}
    server = serve(MODELS / "recorder", env=env, namespace=namespace)
    flood = [{"x": 10_000 + i, "hold": 0.02} for i in range(1000)]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):  # 2,000 inputs, 500 batches of 4
            assert client.post("/predictions", json=flood, headers=tokens["alice"]).status_code == 200
        started_before = _just_after_a_start(audit, 2)
        bobs = client.post("/predictions", json=[{"x": 1}], headers=tokens["bob"])
        started_while_sent = _starts(audit) - started_before
        assert bobs.status_code == 200
        done = client.get(f"/predictions/{bobs.json()['prediction_id']}", params={"wait": 30}, headers=tokens["bob"])
    assert done.json()["status"] == "success"
    # As above: alice's read-ahead stepped aside.
    assert _batches_ahead(audit, started_before, 1) <= min(1, started_while_sent)
    assert _starts(audit) < 100  # alice's 500 batches were far from done
