"""The REST API's status codes and shapes, against the real `tungsten serve`."""

from __future__ import annotations

import concurrent.futures
import json
import re
from pathlib import Path

import pytest

from tests.support import MODELS, Server, ServerFactory, wait_for
from tungstenkit._redis_server import RedisServer, free_port
from tungstenkit.app.routes import is_prediction_id

LIMITS = {"TUNGSTEN_MAX_BODY_BYTES": "4096", "TUNGSTEN_MAX_INPUTS_PER_REQUEST": "8", "TUNGSTEN_MAX_WAIT_S": "30"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "recorder", env=LIMITS)


def test_malformed_json_is_400(server: Server) -> None:
    response = server.client.post("/predictions", content=b'[{"x": 1', headers=JSON)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def test_deeply_nested_json_is_400_not_500(server: Server) -> None:
    body = b"[" * 2000 + b"]" * 2000  # under the body limit (4096): the nesting is what is refused
    assert len(body) < int(LIMITS["TUNGSTEN_MAX_BODY_BYTES"])
    response = server.client.post("/predictions", content=body, headers=JSON)
    assert response.status_code == 400
    assert "nesting too deep" in response.json()["detail"]


def test_body_over_the_limit_is_413(server: Server) -> None:
    response = server.client.post("/predictions", content=json.dumps([{"x": 1, "group": "y" * 5000}]), headers=JSON)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_body_over_the_limit_without_content_length_is_413(server: Server) -> None:
    def chunks():
        yield b'[{"x": 1, "group": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]'

    response = server.client.post("/predictions", content=chunks(), headers=JSON)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"x": 1}, ["body"], "list_type"),
        ([], ["body"], "too_short"),
        ([{"x": 1}] * 9, ["body"], "too_long"),
        ([{"x": 1}, {"x": "one"}], ["body", 1, "x"], "int_parsing"),
        ([{"x": 1}, {"x": 2}, {}], ["body", 2, "x"], "missing"),
        ([{"x": 1, "hold": -1}], ["body", 0, "hold"], "greater_than_equal"),
        # A misspelt option would otherwise run with its default.
        ([{"x": 1}, {"x": 2, "hodl": 1}], ["body", 1, "hodl"], "extra_forbidden"),
    ],
)
def test_invalid_input_is_422_with_index_and_field(server: Server, body: object, loc: list, kind: str) -> None:
    response = server.client.post("/predictions", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc
    assert detail[0]["type"] == kind
    assert detail[0]["msg"]


def test_unknown_fields_are_refused_unless_the_model_opts_out(server: Server, serve: ServerFactory) -> None:
    refused = server.client.post("/predictions", json=[{"x": 1, "hodl": 1, "grup": "b"}])
    assert refused.status_code == 422
    assert [(e["loc"], e["msg"]) for e in refused.json()["detail"]] == [
        (["body", 0, "hodl"], "Extra inputs are not permitted"),
        (["body", 0, "grup"], "Extra inputs are not permitted"),
    ]
    schema = server.client.get("/").json()["input_schema"]
    assert schema["additionalProperties"] is False
    lenient = serve(MODELS / "lenient")
    result = lenient.predict([{"text": "a", "strenght": 0.9}])
    assert result["status"] == "success" and result["outputs"] == [{"text": "a", "strength": 0.5}]
    assert "additionalProperties" not in lenient.client.get("/").json()["input_schema"]


def test_unknown_ids_are_404(server: Server) -> None:
    for path in ("/predictions/" + "0" * 32, "/predictions/not-an-id", "/predictions/" + "0" * 32 + "/cancel"):
        response = server.client.get(path)
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]
    assert server.client.post("/predictions/" + "f" * 32 + "/cancel").status_code == 404


def test_an_id_is_32_hex_digits_and_nothing_after() -> None:
    assert is_prediction_id("0123456789abcdef" * 2)
    for text in ("0" * 32 + "\n", "0" * 32 + "\r\n", "\n" + "0" * 32, "0" * 31, "0" * 33, "A" * 32):
        assert not is_prediction_id(text), repr(text)


def test_wait_holds_until_the_prediction_ends(server: Server) -> None:
    prediction_id = server.client.post("/predictions", json=[{"x": 7, "hold": 0.5}]).json()["prediction_id"]
    response = server.client.get(f"/predictions/{prediction_id}", params={"wait": 20})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["outputs"][0]["x"] == 7
    assert body["created_at"] <= body["started_at"] <= body["completed_at"]


def test_wait_returns_the_current_state_when_time_is_up(server: Server) -> None:
    prediction_id = server.client.post("/predictions", json=[{"x": 1, "hold": 3}]).json()["prediction_id"]
    body = server.client.get(f"/predictions/{prediction_id}", params={"wait": 0.3}).json()
    assert body["status"] in ("pending", "running")
    assert body["outputs"] is None


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
def test_invalid_wait_is_422(server: Server, wait: str) -> None:
    prediction_id = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    response = server.client.get(f"/predictions/{prediction_id}", params={"wait": wait})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "wait"]


def test_sync_predict_answers_with_the_result(server: Server) -> None:
    response = server.client.post("/predict", json=[{"x": 3}, {"x": 4}])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert [o["x"] for o in body["outputs"]] == [3, 4]


def test_metadata_describes_the_model(server: Server) -> None:
    metadata = server.client.get("/").json()
    assert metadata["model_class"] == "Recorder"
    assert metadata["batch_size"] == 4
    assert set(metadata["input_schema"]["properties"]) == {"x", "hold", "group", "stuck"}
    assert metadata["input_schema"]["required"] == ["x"]
    assert set(metadata["output_schema"]["properties"]) == {"x", "batch_size", "batch_id", "worker_pid"}


def test_health_reports_workers_and_queue(server: Server) -> None:
    body = server.client.get("/health").json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["ready_workers"] == 1
    worker = body["workers"][0]
    assert worker["state"] in ("ready", "busy")
    assert int(worker["pid"]) > 0
    assert isinstance(body["queued_inputs"], int)


def test_concurrent_requests_arriving_while_busy_form_batches(server: Server, tmp_path: Path) -> None:
    blocker = server.client.post("/predictions", json=[{"x": 0, "hold": 1.5, "group": "slow"}]).json()["prediction_id"]
    wait_for(lambda: server.client.get(f"/predictions/{blocker}").json()["status"] == "running", 10)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: server.predict([{"x": i}]), range(1, 13)))
    sizes = [r["outputs"][0]["batch_size"] for r in results]
    assert all(r["status"] == "success" for r in results)
    assert max(sizes) > 1  # requests that queued up behind the busy worker were batched
    assert max(sizes) <= 4  # ... and never beyond the maximum
    assert server.result(blocker)["status"] == "success"


def test_ids_are_unique_and_random(server: Server) -> None:
    ids = {server.client.post("/predictions", json=[{"x": i}]).json()["prediction_id"] for i in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_redis_down_is_503_not_500(serve: ServerFactory, tmp_path: Path) -> None:
    private = RedisServer(tmp_path / "redis", port=free_port(), persistent=False)
    private.start()
    serve.redis_url = private.url
    server = serve(MODELS / "recorder", workers=0)
    prediction_id = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    private.stop()
    for response in (
        server.client.post("/predictions", json=[{"x": 1}]),
        server.client.get(f"/predictions/{prediction_id}"),
        server.client.post(f"/predictions/{prediction_id}/cancel"),
    ):
        assert response.status_code == 503
        assert response.headers["Retry-After"]
    assert server.client.get("/health").status_code == 503
    # An id with a trailing line break is no id: 404 at once, without asking Redis (whose
    # failure would log the path, line break and all).
    assert server.client.get(f"/predictions/{prediction_id}%0A").status_code == 404
