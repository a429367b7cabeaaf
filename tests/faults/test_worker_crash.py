"""kill -9 of a worker in the middle of a batch, under load."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.faults.load import Load
from tests.support import MODELS, ServerFactory, audit_runs, wait_for


def _busy_worker(audit: Path) -> tuple[int, tuple[int, ...]]:
    """A worker pid that has started a batch it has not finished, and that batch's inputs."""

    def find() -> tuple[int, tuple[int, ...]] | None:
        started = {(pid, tuple(xs)) for pid, xs in audit_runs(audit, "start")}
        finished = {(pid, tuple(xs)) for pid, xs in audit_runs(audit, "done")}
        running = started - finished
        if not running:
            return None
        pid, xs = next(iter(running))
        return int(pid), xs

    return wait_for(find, 20, interval=0.005, what="a worker in the middle of a batch")


def test_inputs_of_a_killed_worker_are_redelivered_once(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", workers=2, env={"RECORDER_AUDIT": str(audit)})
    load = Load(server.url, clients=6, hold=0.2).start()
    load.wait_accepted(20)
    victim, interrupted = _busy_worker(audit)
    os.kill(victim, signal.SIGKILL)
    load.wait_accepted(len(load.accepted) + 30)
    load.stop()
    report = load.settle(server, "kill -9 a worker mid-batch", audit)
    assert report.lost == 0 and report.wrong_outputs == 0 and report.duplicated_inputs == 0
    assert report.completed == report.accepted  # one death is below the crash limit: nothing fails
    # The batch it was running was taken over: each of its inputs ran to the end on the
    # other worker (and, by duplicated_inputs above, only once).
    finished_elsewhere = {x for pid, xs in audit_runs(audit, "done") if pid != str(victim) for x in xs}
    assert set(interrupted) <= finished_elsewhere


def test_an_input_that_kills_every_worker_fails_after_the_limit(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(MODELS / "crasher", workers=2, env={"TUNGSTEN_HEARTBEAT_INTERVAL_S": "0.3"})
    poison = server.client.post("/predictions", json=[{"x": -1}]).json()["prediction_id"]
    fine = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    result = wait_for(
        lambda: (r := server.result(poison, wait=5))["status"] in ("success", "failed") and r,
        120,
        what="the poisonous input to end",
    )
    assert result["status"] == "failed"
    assert result["error_message"] == "The worker running this input died 3 times; it is not retried again"
    assert server.result(fine)["status"] == "success"
    assert server.predict([{"x": 2}])["status"] == "success"  # and the server serves on
