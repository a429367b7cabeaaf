"""A worker joins a namespace only if it serves the model the namespace's API serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import redis

from tests.support import MODELS, ROOT, ServerFactory, start_worker
from tungstenkit._queue import Keys, served_model_digest
from tungstenkit._store import ModelStore, StoredModel
from tungstenkit.worker.model_worker import EXIT_MODEL_MISMATCH


def _build(home: Path, tmp_path: Path, tag: str, scale: int) -> StoredModel:
    folder = tmp_path / f"weighted-{tag}"
    shutil.copytree(MODELS / "weighted", folder)
    (folder / "weights" / "scale.json").write_text(json.dumps({"scale": scale}))
    return ModelStore(home).build(folder, "weighted", tag)


def _worker(model: str, redis_url: str, namespace: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tungstenkit.cli", "worker", model, "--redis-url", redis_url, "--namespace", namespace],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TUNGSTEN_HOME": str(home)},
    )


def test_a_worker_of_another_model_refuses_to_join(
    serve: ServerFactory, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # the serve fixture's TUNGSTEN_HOME
    served = _build(home, tmp_path, "v1", scale=7)
    other = _build(home, tmp_path, "v2", scale=8)
    namespace = f"digest{uuid.uuid4().hex[:8]}"
    server = serve("weighted:v1", workers=0, namespace=namespace)
    assert served_model_digest(redis_client, Keys(namespace)) == served.digest

    refused = _worker("weighted:v2", redis_url, namespace, home)
    assert refused.returncode == EXIT_MODEL_MISMATCH
    assert "Traceback" not in refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if "refusing to join" in line]
    assert served.digest in line and other.digest in line and "weighted:v2" in line
    assert server.health().json()["workers"] == []  # it never registered

    # The same model under another tag has the same digest: it joins (and serves).
    assert ModelStore(home).tag("weighted:v1", "weighted:prod").digest == served.digest
    prediction = server.client.post("/predictions", json=[{"x": 3}]).json()["prediction_id"]
    worker = start_worker("weighted:prod", redis_url, namespace, {"TUNGSTEN_HOME": str(home)})
    try:
        assert server.result(prediction)["outputs"][0]["y"] == 21
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


def test_a_model_served_from_a_folder_clears_the_namespaces_digest(
    serve: ServerFactory, redis_client: redis.Redis
) -> None:
    namespace = f"digest{uuid.uuid4().hex[:8]}"
    redis_client.set(Keys(namespace).model_digest, "sha256:" + "0" * 64)
    serve(MODELS / "weighted", workers=1, namespace=namespace)  # its worker is not refused by the stale digest
    assert served_model_digest(redis_client, Keys(namespace)) is None
