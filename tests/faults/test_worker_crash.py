"""kill -9 of a worker in the middle of a batch, under load."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.faults.load import Load
from tests.support import MODELS, ServerFactory, audit_runs, wait_for


def _busy_worker(server, audit: Path) -> int:  # noqa: ANN001
    """A worker pid that has started a batch it has not finished."""

    def find() -> int | None:
        started = {(pid, tuple(xs)) for pid, xs in audit_runs(audit, "start")}
        finished = {(pid, tuple(xs)) for pid, xs in audit_runs(audit, "done")}
        running = started - finished
        return int(next(iter(running))[0]) if running else None

    return wait_for(find, 20, interval=0.005, what="a worker in the middle of a batch")


def test_inputs_of_a_killed_worker_are_redelivered_once(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", workers=2, env={"RECORDER_AUDIT": str(audit)})
    load = Load(server.url, clients=6, hold=0.2).start()
    load.wait_accepted(20)
    victim = _busy_worker(server, audit)
    os.kill(victim, signal.SIGKILL)
    load.wait_accepted(len(load.accepted) + 30)
    load.stop()
    report = load.settle(server, "kill -9 a worker mid-batch", audit)
    assert report.lost == 0 and report.wrong_outputs == 0 and report.duplicated_inputs == 0
    assert report.completed == report.accepted  # one death is below the crash limit: nothing fails
    assert "Took over" in server.log()
    assert any(pid == str(victim) for pid, _ in audit_runs(audit, "start"))


def test_an_input_that_kills_every_worker_fails_after_the_limit(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(MODELS / "crasher", workers=2, env={"TUNGSTEN_HEARTBEAT_INTERVAL_S": "0.3"})
    poison = server.client.post("/predictions", json=[{"x": -1}]).json()["prediction_id"]
    fine = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    result = server.result(poison, wait=60)
    while result["status"] not in ("success", "failed"):
        result = server.result(poison, wait=60)
    assert result["status"] == "failed"
    assert result["error_message"] == "The worker running this input died 3 times; it is not retried again"
    assert server.result(fine)["status"] == "success"
    assert server.predict([{"x": 2}])["status"] == "success"  # and the server serves on
