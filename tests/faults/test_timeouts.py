"""Prediction and setup timeouts, and setup failures after the server has served."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support import MODELS, ServerFactory, audit_runs, tungsten, wait_for
from tungstenkit._redis_server import free_port


def test_a_prediction_past_its_timeout_fails_and_the_worker_goes_on(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", env={"TUNGSTEN_PREDICTION_TIMEOUT_S": "1", "RECORDER_AUDIT": str(audit)})
    slow = server.predict([{"x": 1, "hold": 30}])
    assert slow["status"] == "failed" and slow["error_message"] == "Timeout"
    # The call was interrupted: it started and never ran its 30 s to the end.
    assert [xs for _, xs in audit_runs(audit, "start")] == [[1]]
    assert audit_runs(audit, "done") == []
    worker = server.client.get("/health").json()["workers"][0]["pid"]
    assert server.predict([{"x": 2, "hold": 0.2}])["status"] == "success"
    assert server.client.get("/health").json()["workers"][0]["pid"] == worker  # interrupted, not replaced


def test_a_model_that_cannot_be_interrupted_is_replaced(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", env={"TUNGSTEN_PREDICTION_TIMEOUT_S": "1"})
    first = server.client.get("/health").json()["workers"][0]["pid"]
    stuck = server.predict([{"x": 1, "hold": 60, "stuck": True}], wait=40)
    assert stuck["status"] == "failed" and stuck["error_message"] == "Timeout"

    def replaced() -> bool:
        workers = server.client.get("/health").json()["workers"]
        return any(w["pid"] != first and w["state"] == "ready" for w in workers)

    wait_for(replaced, 40, what="a fresh worker")
    assert server.predict([{"x": 2}])["status"] == "success"


def test_setup_past_its_timeout_stops_serve_with_a_message(tmp_path: Path, redis_url: str) -> None:
    env = {"TUNGSTEN_HOME": str(tmp_path), "TUNGSTEN_SETUP_TIMEOUT_S": "1", "RECORDER_SETUP_SLEEP": "60"}
    result = tungsten(
        "serve",
        str(MODELS / "recorder"),
        "--redis-url",
        redis_url,
        "--host",
        "127.0.0.1",
        "-p",
        str(free_port()),
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "setup() of Recorder did not finish within 1s" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: worker-1 setup() failed")


def test_a_worker_failing_setup_after_serving_is_retried_and_shown_in_health(
    serve: ServerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "break-setup"
    server = serve(MODELS / "recorder", workers=2, env={"RECORDER_SETUP_FAIL": str(marker)})
    victim = int(server.client.get("/health").json()["workers"][0]["pid"])
    marker.touch()
    os.kill(victim, signal.SIGKILL)

    def failed_worker() -> dict | None:
        workers = server.client.get("/health").json()["workers"]
        return next((w for w in workers if w["state"] == "failed"), None)

    failed = wait_for(failed_worker, 30, what="a failed worker in /health")
    assert "setup exploded on purpose" in failed["error"]
    assert server.process.poll() is None  # serve keeps serving with the other worker
    assert server.predict([{"x": 1}])["status"] == "success"
    marker.unlink()
    wait_for(lambda: server.client.get("/health").json()["ready_workers"] == 2, 60, what="the worker to come back")
