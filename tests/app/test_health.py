"""``GET /health`` as a readiness probe: the live workers, and 503 when none can serve;
``?scope=api`` for probing an API process alone."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

from tests.support import MODELS, ServerFactory, start_worker, wait_for
from tungstenkit._redis_server import RedisServer, free_port


def _worker(redis_url: str, namespace: str, log: Path, home: Path) -> subprocess.Popen[bytes]:
    return start_worker(MODELS / "recorder", redis_url, namespace, {"TUNGSTEN_HOME": str(home)}, log)


def test_health_turns_503_when_the_last_worker_dies_and_200_when_one_is_back(
    serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    namespace = f"health{uuid.uuid4().hex[:8]}"
    # The API alone, with a worker it does not supervise, so that nothing restarts it.
    server = serve(MODELS / "recorder", workers=0, namespace=namespace, env={"TUNGSTEN_HEARTBEAT_INTERVAL_S": "0.5"})
    assert server.client.get("/health").status_code == 503
    log = tmp_path / "workers.log"
    first = _worker(redis_url, namespace, log, tmp_path / "home")
    try:
        server.wait_ready()
        body = server.client.get("/health").json()
        assert body["status"] == "ok" and body["ready_workers"] == 1
        (worker,) = body["workers"]
        assert worker["pid"] == first.pid
        for field in ("host", "model", "state", "heartbeat_at"):
            assert worker[field], field
        assert worker["model"] == "recorder" and worker["state"] == "ready"
        # Numbers are JSON numbers, not the strings Redis keeps.
        assert worker["batch_size"] == 4 and worker["current_batch"] == 0
        assert isinstance(worker["inputs_per_s"], float) and isinstance(worker["heartbeat_unix"], float)

        first.send_signal(signal.SIGKILL)
        first.wait(30)
        wait_for(lambda: server.client.get("/health").status_code == 503, 30, what="503 once the worker is gone")
        assert server.client.get("/health").json()["status"] == "no_ready_workers"

        second = _worker(redis_url, namespace, log, tmp_path / "home")
        try:
            wait_for(lambda: server.client.get("/health").status_code == 200, 60, what="200 with the new worker")
            (worker,) = server.client.get("/health").json()["workers"]
            assert worker["pid"] == second.pid
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_scope_api_answers_for_the_api_alone_without_workers_or_redis(serve: ServerFactory, tmp_path: Path) -> None:
    private = RedisServer(tmp_path / "redis", port=free_port(), persistent=False)
    private.start()
    try:
        serve.redis_url = private.url
        server = serve(MODELS / "recorder", workers=0)
        # No worker: the model cannot serve, but this API takes predictions.
        assert server.client.get("/health").status_code == 503
        response = server.client.get("/health", params={"scope": "api"})
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        assert server.client.post("/predictions", json=[{"x": 1}]).status_code == 200
        assert server.client.get("/health", params={"scope": "model"}).status_code == 503
        bad = server.client.get("/health", params={"scope": "everything"})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query", "scope"]
    finally:
        private.stop()
    # Redis gone: the API still answers (503 with Retry-After to predictions), so it stays alive.
    assert server.client.post("/predictions", json=[{"x": 1}]).status_code == 503
    assert server.client.get("/health").status_code == 503
    assert server.client.get("/health", params={"scope": "api"}).status_code == 200


def test_scope_api_is_503_while_the_api_drains(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", workers=0, env={"TUNGSTEN_DRAIN_S": "10"})
    assert server.client.get("/health", params={"scope": "api"}).status_code == 200
    server.process.send_signal(signal.SIGTERM)

    def draining() -> bool:
        response = server.client.get("/health", params={"scope": "api"})
        return response.status_code == 503 and response.json() == {"status": "draining"}

    wait_for(draining, 10, what="/health?scope=api to say draining")
    assert server.client.post("/predictions", json=[{"x": 1}]).status_code == 503
    assert server.process.wait(60) == 0
