"""Idempotent submits: the Idempotency-Key header, against the real `tungsten serve`."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import Server, audit_runs


def _post(recorder_server: Server, body: list, key: str, path: str = "/predictions", **params: str) -> httpx.Response:
    return recorder_server.client.post(path, json=body, headers={"Idempotency-Key": key}, params=params)


def test_fifty_concurrent_duplicates_make_one_prediction(recorder_server: Server, recorder_audit: Path) -> None:
    key = uuid.uuid4().hex
    body = [{"x": 4242, "hold": 0.2}, {"x": 4243}]
    start = threading.Barrier(50)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=recorder_server.url, timeout=30) as client:
            start.wait()
            return client.post("/predictions", json=body, headers={"Idempotency-Key": key})

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    ids = {r.json()["prediction_id"] for r in responses}
    assert len(ids) == 1
    # One answer created it; the 49 others say they replayed it.
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
    (prediction_id,) = ids
    assert recorder_server.result(prediction_id)["status"] == "success"
    ran = [x for _pid, xs in audit_runs(recorder_audit, "done") for x in xs]
    assert ran.count(4242) == 1 and ran.count(4243) == 1


def test_a_retry_after_the_end_gets_the_same_prediction(recorder_server: Server) -> None:
    key = str(uuid.uuid4())
    first = _post(recorder_server, [{"x": 1}], key)
    prediction_id = first.json()["prediction_id"]
    assert "Idempotent-Replayed" not in first.headers
    assert recorder_server.result(prediction_id)["status"] == "success"
    again = _post(recorder_server, [{"x": 1}], key)
    assert again.status_code == 200
    assert again.json() == {"prediction_id": prediction_id}
    assert again.headers["Idempotent-Replayed"] == "true"
    # POST /predict with the key answers with that prediction's body, without a second run.
    synced = _post(recorder_server, [{"x": 1}], key, path="/predict")
    assert synced.status_code == 200
    assert synced.json() == recorder_server.result(prediction_id)
    assert synced.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_request_is_422(recorder_server: Server) -> None:
    key = uuid.uuid4().hex
    assert _post(recorder_server, [{"x": 1}], key).status_code == 200
    for other in ([{"x": 2}], [{"x": 1}, {"x": 1}], [{"x": 1, "group": "b"}]):
        response = _post(recorder_server, other, key)
        assert response.status_code == 422, other
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["header", "Idempotency-Key"]
        assert detail["type"] == "idempotency_key_reused"
        assert "another request" in detail["msg"]
    # The webhook is part of the request too.
    hooked = _post(recorder_server, [{"x": 1}], key, webhook="https://hooks.example.com/x")
    assert hooked.status_code == 422


def test_requests_without_a_key_or_with_different_keys_are_separate(recorder_server: Server) -> None:
    body = [{"x": 7}]
    plain = {recorder_server.client.post("/predictions", json=body).json()["prediction_id"] for _ in range(3)}
    keyed = {_post(recorder_server, body, uuid.uuid4().hex).json()["prediction_id"] for _ in range(3)}
    assert len(plain) == 3 and len(keyed) == 3


@pytest.mark.parametrize("key", [b"", b"k" * 256, "caf\u00e9".encode()])
def test_an_unusable_key_is_422(recorder_server: Server, key: bytes) -> None:
    response = recorder_server.client.post("/predictions", json=[{"x": 1}], headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
