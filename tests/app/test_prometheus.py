"""``GET /metrics``: Prometheus text, the same from every API process, counting every worker."""

from __future__ import annotations

import concurrent.futures
import json
import uuid

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support import MODELS, Server, ServerFactory, wait_for
from tungstenkit._queue import Snapshot, WorkerInfo
from tungstenkit.app.prometheus import render, render_openmetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def scrape(server: Server) -> Samples:
    response = server.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def test_render_is_valid_prometheus_text_with_workers_and_gpus() -> None:
    gpus = [{"index": 0, "name": 'Fake "GPU"', "allocated": 1024, "reserved": 2048, "total": 8192}]
    snapshot = Snapshot(
        queued_inputs=3,
        metrics={
            "predictions:success": 5,
            "inputs:success": 9,
            "batches": 2,
            "batch_size:le:4": 1,
            "batch_size:le:8": 1,
            "batch_size:sum": 9,
            "model_seconds:le:0.1": 2,
            "model_seconds:sum": 0.12,
        },
        workers=[
            WorkerInfo(
                "h:1:a",
                {
                    "host": "h",
                    "pid": "1",
                    "model": "m",
                    "state": "busy",
                    "current_batch": "4",
                    "heartbeat_unix": "1700000000.5",
                    "inputs_per_s": "2.5",
                    "gpus": json.dumps(gpus),
                },
            ),
            WorkerInfo("h:2:b", {"host": "h", "pid": "2", "model": "m", "state": "ready", "current_batch": "0"}),
        ],
        webhook_events_waiting=1,
    )
    samples = parse(render(snapshot, "m"))
    assert value(samples, "tungsten_queued_inputs") == 3
    assert value(samples, "tungsten_predictions_total", outcome="success") == 5
    assert value(samples, "tungsten_predictions_total", outcome="canceled") == 0
    assert value(samples, "tungsten_batch_size_bucket", le="2") == 0
    assert value(samples, "tungsten_batch_size_bucket", le="4") == 1
    assert value(samples, "tungsten_batch_size_bucket", le="+Inf") == 2  # cumulative
    assert value(samples, "tungsten_batch_size_count") == 2 and value(samples, "tungsten_batch_size_sum") == 9
    assert value(samples, "tungsten_workers", state="busy") == 1
    assert value(samples, "tungsten_workers", state="ready") == 1
    assert value(samples, "tungsten_worker_current_batch_size", worker="h:1:a") == 4
    assert value(samples, "tungsten_gpu_memory_allocated_bytes", worker="h:1:a", gpu="0", name='Fake "GPU"') == 1024
    assert value(samples, "tungsten_gpu_memory_total_bytes", worker="h:1:a", gpu="0", name='Fake "GPU"') == 8192
    assert value(samples, "tungsten_webhook_events_waiting") == 1
    # The same numbers in OpenMetrics, for scrapers that ask for it.
    families = {f.name: f for f in openmetrics_families(render_openmetrics(snapshot, "m"))}
    assert families["tungsten_predictions"].type == "counter"
    assert {
        s.labels["outcome"]: s.value
        for s in families["tungsten_predictions"].samples
        if s.name == "tungsten_predictions_total"
    }["success"] == 5


#: What must read the same from every API process once the work is done.
SHARED = (
    "tungsten_predictions_total",
    "tungsten_inputs_total",
    "tungsten_batches_total",
    "tungsten_batch_size_bucket",
    "tungsten_batch_size_count",
    "tungsten_queue_time_seconds_count",
    "tungsten_model_time_seconds_count",
    "tungsten_prediction_duration_seconds_count",
    "tungsten_queued_inputs",
    "tungsten_workers",
)


def test_metrics_move_as_predictions_run_and_agree_across_workers_and_api_processes(serve: ServerFactory) -> None:
    namespace = f"metrics{uuid.uuid4().hex[:8]}"
    first = serve(MODELS / "recorder", workers=2, namespace=namespace)
    second = serve(MODELS / "recorder", workers=0, namespace=namespace)  # another API process, same model
    before = scrape(first)
    assert value(before, "tungsten_predictions_total", outcome="success") == 0
    assert value(before, "tungsten_workers", state="ready") == 2

    def run(i: int) -> dict:
        server = first if i % 2 else second
        return server.predict([{"x": -1 if i in (5, 17) else i, "hold": 0.05}])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, range(40)))
    assert sum(r["status"] == "success" for r in results) == 38

    def settled() -> Samples | None:
        workers = first.client.get("/health").json()["workers"]
        samples = scrape(first)
        batches = sum(int(w["batches"]) for w in workers)
        done = (
            value(samples, "tungsten_inputs_total", outcome="success") == 38
            and value(samples, "tungsten_inputs_total", outcome="failed") == 2
            and value(samples, "tungsten_batches_total") == batches
        )
        return samples if done else None

    samples = wait_for(settled, 30, interval=0.2, what="the workers' metrics to arrive")
    assert value(samples, "tungsten_predictions_total", outcome="success") == 38
    assert value(samples, "tungsten_predictions_total", outcome="failed") == 2
    assert value(samples, "tungsten_prediction_duration_seconds_count") == 40
    assert value(samples, "tungsten_queue_time_seconds_count") == 40
    batches = value(samples, "tungsten_batches_total")
    assert value(samples, "tungsten_batch_size_count") == batches
    assert value(samples, "tungsten_model_time_seconds_count") == batches
    assert value(samples, "tungsten_batch_size_sum") >= 40  # failed batches were tried again in halves
    assert value(samples, "tungsten_queued_inputs") == 0
    negotiated = first.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert negotiated.headers["content-type"].startswith("application/openmetrics-text")
    assert negotiated.text.endswith("# EOF\n")
    # Both workers ran batches, and the totals count both.
    workers = first.client.get("/health").json()["workers"]
    assert len(workers) == 2 and all(int(w["batches"]) > 0 for w in workers)
    # The other API process reads the same numbers.
    elsewhere = scrape(second)
    for (name, labels), found in samples.items():
        if name in SHARED:
            assert value(elsewhere, name, **dict(labels)) == found, name
