"""Canceling predictions and failing ones, against the real server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import MODELS, Server, ServerFactory, audit_runs, wait_for


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def server(serve: ServerFactory, audit: Path) -> Server:
    return serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})


def _status(server: Server, prediction_id: str) -> dict:
    return server.client.get(f"/predictions/{prediction_id}").json()


def _seen_inputs(audit: Path) -> list[int]:
    return [x for _pid, xs in audit_runs(audit) for x in xs]


def test_a_canceled_pending_prediction_never_runs(server: Server, audit: Path) -> None:
    blocker = server.client.post("/predictions", json=[{"x": 1, "hold": 1.0}]).json()["prediction_id"]
    wait_for(lambda: _status(server, blocker)["status"] == "running", 10)
    pending = server.client.post("/predictions", json=[{"x": 2, "hold": 1.0}, {"x": 3, "hold": 1.0}]).json()[
        "prediction_id"
    ]
    assert _status(server, pending)["status"] == "pending"
    canceled = server.client.post(f"/predictions/{pending}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "failed"
    assert canceled.json()["error_message"] == "Canceled"
    after = server.predict([{"x": 4}])  # runs after the blocker, so the worker went past the canceled one
    assert after["status"] == "success"
    assert server.result(blocker)["status"] == "success"
    assert 2 not in _seen_inputs(audit) and 3 not in _seen_inputs(audit)
    assert _status(server, pending)["error_message"] == "Canceled"


def test_canceling_a_running_prediction_frees_the_worker(server: Server) -> None:
    long = server.client.post("/predictions", json=[{"x": 1, "hold": 60}]).json()["prediction_id"]
    wait_for(lambda: _status(server, long)["status"] == "running", 10)
    started = time.monotonic()
    response = server.client.get(f"/predictions/{long}/cancel")  # the seed's GET form
    assert response.json()["status"] == "failed"
    assert _status(server, long)["error_message"] == "Canceled"  # at once
    assert server.predict([{"x": 2}], wait=20)["status"] == "success"
    assert time.monotonic() - started < 10  # the 60 s batch was interrupted
    assert "interrupting" in server.log()


def test_canceling_one_of_two_predictions_in_a_running_batch(server: Server) -> None:
    first = server.client.post("/predictions", json=[{"x": 0, "hold": 0.5, "group": "w"}]).json()["prediction_id"]
    wait_for(lambda: _status(server, first)["status"] == "running", 10)
    a = server.client.post("/predictions", json=[{"x": 1, "hold": 1.0}]).json()["prediction_id"]
    b = server.client.post("/predictions", json=[{"x": 2, "hold": 1.0}]).json()["prediction_id"]
    wait_for(lambda: _status(server, a)["status"] == "running" and _status(server, b)["status"] == "running", 10)
    server.client.post(f"/predictions/{a}/cancel")
    assert _status(server, a)["status"] == "failed"
    done = server.result(b)
    assert done["status"] == "success"
    assert done["outputs"][0]["batch_size"] == 2  # they shared the batch, which ran on
    final = server.result(a)
    assert final["status"] == "failed" and final["error_message"] == "Canceled" and final["outputs"] is None


def test_an_exception_fails_only_its_predictions_and_the_worker_goes_on(server: Server) -> None:
    bad = server.predict([{"x": -3, "group": "bad"}])
    assert bad["status"] == "failed"
    assert bad["error_message"] == "ValueError: negative input -3"
    assert bad["outputs"] is None
    good = server.predict([{"x": 3}, {"x": 4}])
    assert good["status"] == "success"
    assert "Traceback" in server.log()  # the full traceback goes to the worker's log
