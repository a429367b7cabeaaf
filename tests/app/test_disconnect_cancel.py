"""POST /predict cancels its prediction when its client leaves, against the real `tungsten serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.support import MODELS, Server, ServerFactory, audit_runs, connect, head, wait_for
from tungstenkit._queue import Keys


def _send_sync_predict(server: Server, inputs: list, headers: dict[str, str] | None = None):
    body = json.dumps(inputs).encode()
    sock = connect(server)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    sock.sendall(head("POST", "/predict", len(body)).replace(b"\r\n\r\n", b"\r\n" + extra.encode() + b"\r\n", 1) + body)
    return sock


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def namespace_and_server(serve: ServerFactory, audit: Path, namespace: str) -> tuple[str, Server]:
    return namespace, serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)}, namespace=namespace)


def _status(server: Server, prediction_id: str) -> dict:
    return server.client.get(f"/predictions/{prediction_id}").json()


def test_a_running_prediction_is_canceled_when_its_client_leaves(
    namespace_and_server: tuple[str, Server], audit: Path, redis_client: redis.Redis
) -> None:
    namespace, server = namespace_and_server
    sock = _send_sync_predict(server, [{"x": 501, "hold": 60}])
    wait_for(lambda: any(501 in xs for _pid, xs in audit_runs(audit)), 20, what="the batch to start")
    found = wait_for(lambda: _find_running(server, redis_client, namespace), 10, what="the prediction")
    sock.close()
    ended = wait_for(lambda: (b := _status(server, found))["status"] == "failed" and b, 10, what="the cancel")
    assert ended["error_message"] == "Canceled"
    # The 60 s batch was interrupted: the worker serves the next prediction at once.
    assert server.predict([{"x": 502}], wait=20)["status"] == "success"
    assert not any(501 in xs for _pid, xs in audit_runs(audit, "done"))


def test_a_pending_prediction_never_runs_when_its_client_left(
    namespace_and_server: tuple[str, Server], audit: Path
) -> None:
    _, server = namespace_and_server
    blocker = server.client.post("/predictions", json=[{"x": 510, "hold": 1.5}]).json()["prediction_id"]
    wait_for(lambda: _status(server, blocker)["status"] == "running", 10)
    sock = _send_sync_predict(server, [{"x": 511}])
    wait_for(lambda: _queued(server) >= 2, 5, what="the sync prediction queued behind the blocker")
    sock.close()
    wait_for(lambda: "left before prediction" in server.log(), 10, what="the cancel on disconnect")
    assert server.result(blocker)["status"] == "success"
    assert server.predict([{"x": 512}])["status"] == "success"  # ran after the blocker
    assert 511 not in [x for _pid, xs in audit_runs(audit) for x in xs]


def test_with_an_idempotency_key_or_the_setting_off_the_prediction_runs_on(serve: ServerFactory, audit: Path) -> None:
    server = serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit), "TUNGSTEN_CANCEL_ON_DISCONNECT": "off"})
    sock = _send_sync_predict(server, [{"x": 520, "hold": 0.5}])
    wait_for(lambda: any(520 in xs for _pid, xs in audit_runs(audit)), 20, what="the batch to start")
    sock.close()
    wait_for(lambda: any(520 in xs for _pid, xs in audit_runs(audit, "done")), 20, what="the batch to end")
    keyed = serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})
    sock = _send_sync_predict(keyed, [{"x": 521, "hold": 0.5}], {"Idempotency-Key": "k-521"})
    wait_for(lambda: any(521 in xs for _pid, xs in audit_runs(audit)), 20, what="the batch to start")
    sock.close()
    wait_for(lambda: any(521 in xs for _pid, xs in audit_runs(audit, "done")), 20, what="the batch to end")
    # Its retry finds it: one prediction, run once.
    retried = keyed.client.post("/predict", json=[{"x": 521, "hold": 0.5}], headers={"Idempotency-Key": "k-521"})
    assert retried.json()["status"] == "success"
    assert [x for _pid, xs in audit_runs(audit, "done") for x in xs].count(521) == 1


def _queued(server: Server) -> int:
    return int(server.client.get("/health").json()["queued_inputs"])


def _find_running(server: Server, client: redis.Redis, namespace: str) -> str | None:
    keys = Keys(namespace)
    for key in client.scan_iter(match=keys.prediction_prefix + "*", count=1000):
        prediction_id = key.decode().rsplit(":", 1)[1]
        if _status(server, prediction_id)["status"] == "running":
            return prediction_id
    return None
