"""Deadlines: a prediction no worker started in time fails unrun; a running one runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import MODELS, Server, ServerFactory, audit_runs, wait_for


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.log"


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory, audit: Path) -> Server:
    return module_serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})


def _status(server: Server, prediction_id: str) -> dict:
    return server.client.get(f"/predictions/{prediction_id}").json()


def _ran(audit: Path) -> list[int]:
    return [x for _pid, xs in audit_runs(audit) for x in xs]


def _metric(server: Server, name: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_deadline_passed_in_the_queue_fails_without_calling_predict(server: Server, audit: Path) -> None:
    failed_before = _metric(server, 'tungsten_predictions_total{outcome="failed"}')
    blocker = server.client.post("/predictions", json=[{"x": 100, "hold": 1.5}]).json()["prediction_id"]
    wait_for(lambda: _status(server, blocker)["status"] == "running", 10)
    late = server.client.post("/predictions", params={"deadline_s": 0.3}, json=[{"x": 101}, {"x": 102}])
    assert late.status_code == 200
    by_header = server.client.post(
        "/predictions", headers={"X-Tungsten-Deadline-S": "0.3"}, json=[{"x": 103, "group": "other"}]
    )
    in_time = server.client.post("/predictions", params={"deadline_s": 60}, json=[{"x": 104}])
    for response in (late, by_header):
        ended = server.result(response.json()["prediction_id"])
        assert ended["status"] == "failed" and ended["error_message"] == "Deadline exceeded"
        assert ended["started_at"] is None and ended["outputs"] is None
    assert server.result(in_time.json()["prediction_id"])["status"] == "success"
    assert server.result(blocker)["status"] == "success"
    ran = _ran(audit)
    assert 104 in ran and not {101, 102, 103} & set(ran)
    wait_for(lambda: _metric(server, 'tungsten_predictions_total{outcome="failed"}') >= failed_before + 2, 10)


def test_a_running_prediction_is_not_interrupted_by_its_deadline(server: Server) -> None:
    response = server.client.post("/predictions", params={"deadline_s": 0.2}, json=[{"x": 110, "hold": 1.0}])
    ended = server.result(response.json()["prediction_id"])
    assert ended["status"] == "success" and ended["outputs"][0]["x"] == 110


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "86401"])
def test_an_invalid_deadline_is_422(server: Server, value: str) -> None:
    response = server.client.post("/predictions", params={"deadline_s": value}, json=[{"x": 1}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "deadline_s"]
    response = server.client.post("/predict", headers={"X-Tungsten-Deadline-S": value}, json=[{"x": 1}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "X-Tungsten-Deadline-S"]
