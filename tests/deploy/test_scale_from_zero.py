"""The manifests' scaling loop against a real `tungsten serve --workers 0`: with no worker the
API passes the probes the manifests give it, takes a prediction, and the metric the
ScaledObject reads rises above its activation value; a worker then empties the queue."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.manifests import BASE, needs_kubectl, render
from tests.support import MODELS, Server, ServerFactory, start_worker, wait_for

pytestmark = needs_kubectl


def _metric(server: Server, path: str, name: str) -> float:
    response = server.client.get(path)
    assert response.status_code == 200
    # The whole page must parse: KEDA's metrics-api scaler parses all of it.
    values = [s.value for f in text_string_to_metric_families(response.text) for s in f.samples if s.name == name]
    assert len(values) == 1, values
    return values[0]


def test_with_no_worker_the_api_is_ready_takes_work_and_wakes_the_scaler(
    serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    manifests = render(BASE)
    api = manifests.container("Deployment", "tungsten-api")
    probes = {api[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    (scaled,) = manifests.of_kind("ScaledObject")
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    metrics_path, metric = urlsplit(trigger["url"]).path, trigger["valueLocation"]
    activation = float(trigger["activationTargetValue"])
    assert scaled["spec"]["minReplicaCount"] == 0

    namespace = f"keda{uuid.uuid4().hex[:8]}"
    server = serve(MODELS / "recorder", workers=0, namespace=namespace)
    for path in probes:
        assert server.client.get(path).status_code == 200, path  # in the Service with no worker
    assert server.client.get("/health").status_code == 503  # the probe that would deadlock
    assert _metric(server, metrics_path, metric) <= activation  # nothing queued: zero workers
    response = server.client.post("/predictions", json=[{"x": 1}, {"x": 2}])
    assert response.status_code == 200
    prediction_id = response.json()["prediction_id"]
    assert _metric(server, metrics_path, metric) == 2 > activation  # KEDA starts a worker

    home = {"TUNGSTEN_HOME": str(tmp_path / "home")}
    worker = start_worker(MODELS / "recorder", redis_url, namespace, home, tmp_path / "worker.log")
    try:
        assert server.result(prediction_id)["status"] == "success"
        wait_for(lambda: _metric(server, metrics_path, metric) <= activation, 30, what="the queue to empty")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
