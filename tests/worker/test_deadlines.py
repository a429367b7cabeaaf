"""Deadlines: a prediction no worker started in time fails unrun; a running one runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Server, audit_runs, wait_for


def _status(recorder_server: Server, prediction_id: str) -> dict:
    return recorder_server.client.get(f"/predictions/{prediction_id}").json()


def _ran(recorder_audit: Path) -> list[int]:
    return [x for _pid, xs in audit_runs(recorder_audit) for x in xs]


def _metric(recorder_server: Server, name: str) -> float:
    for line in recorder_server.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_deadline_passed_in_the_queue_fails_without_calling_predict(
    recorder_server: Server, recorder_audit: Path
) -> None:
    failed_before = _metric(recorder_server, 'tungsten_predictions_total{outcome="failed"}')
    blocker = recorder_server.client.post("/predictions", json=[{"x": 100, "hold": 1.5}]).json()["prediction_id"]
    wait_for(lambda: _status(recorder_server, blocker)["status"] == "running", 10)
    late = recorder_server.client.post("/predictions", params={"deadline_s": 0.3}, json=[{"x": 101}, {"x": 102}])
    assert late.status_code == 200
    by_header = recorder_server.client.post(
        "/predictions", headers={"X-Tungsten-Deadline-S": "0.3"}, json=[{"x": 103, "group": "other"}]
    )
    in_time = recorder_server.client.post("/predictions", params={"deadline_s": 60}, json=[{"x": 104}])
    for response in (late, by_header):
        ended = recorder_server.result(response.json()["prediction_id"])
        assert ended["status"] == "failed" and ended["error_message"] == "Deadline exceeded"
        assert ended["started_at"] is None and ended["outputs"] is None
    assert recorder_server.result(in_time.json()["prediction_id"])["status"] == "success"
    assert recorder_server.result(blocker)["status"] == "success"
    ran = _ran(recorder_audit)
    assert 104 in ran and not {101, 102, 103} & set(ran)
    wait_for(lambda: _metric(recorder_server, 'tungsten_predictions_total{outcome="failed"}') >= failed_before + 2, 10)


def test_a_running_prediction_is_not_interrupted_by_its_deadline(recorder_server: Server) -> None:
    response = recorder_server.client.post("/predictions", params={"deadline_s": 0.2}, json=[{"x": 110, "hold": 1.0}])
    ended = recorder_server.result(response.json()["prediction_id"])
    assert ended["status"] == "success" and ended["outputs"][0]["x"] == 110


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "86401"])
def test_an_invalid_deadline_is_422(recorder_server: Server, value: str) -> None:
    response = recorder_server.client.post("/predictions", params={"deadline_s": value}, json=[{"x": 1}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "deadline_s"]
    response = recorder_server.client.post("/predict", headers={"X-Tungsten-Deadline-S": value}, json=[{"x": 1}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "X-Tungsten-Deadline-S"]
