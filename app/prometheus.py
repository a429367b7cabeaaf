"""``GET /metrics``: the Prometheus exposition formats, from what Redis holds for the namespace.

Every number comes from Redis (the metrics hash and the workers' heartbeats), so any
API process answers the same, however many API processes and workers there are.
The text is written by ``prometheus_client`` from a collector over one snapshot read
per scrape: escaping, the classic text format and OpenMetrics (for scrapers that ask
for it with ``Accept``) come from the library; this module only says what to expose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import cast

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from tungstenkit._measurements import (
    BATCH_SIZE,
    INPUT_OUTCOMES,
    MODEL_TIME,
    PREDICTION_OUTCOMES,
    PREDICTION_TIME,
    QUEUE_TIME,
    WEBHOOK_OUTCOMES,
    Histogram,
    parse_gpus,
)
from tungstenkit._queue import Snapshot, WorkerInfo
from tungstenkit.app.access import authorize

#: The classic text format (0.0.4), which every Prometheus and KEDA version reads.
CONTENT_TYPE = exposition.CONTENT_TYPE_PLAIN_0_0_4
#: Worker states, so that each has a series (0 when no worker is in it).
WORKER_STATES = ("starting", "setup", "ready", "busy", "stopping", "failed")
#: prometheus_client leaves the OpenMetrics writer untyped; it takes a registry and returns bytes.
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)


def _counter(name: str, help_text: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def _gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_text, value=value)


def _histogram(name: str, help_text: str, histogram: Histogram, metrics: dict[str, float]) -> Metric:
    """The hash keeps one count per bucket; Prometheus's buckets are cumulative."""
    buckets = []
    total = 0.0
    for label in histogram.labels():
        total += metrics.get(f"{histogram.field}:le:{label}", 0)
        buckets.append((label, total))
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=metrics.get(f"{histogram.field}:sum", 0.0))


def _per_worker(workers: list[WorkerInfo], name: str, help_text: str, field: str) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=["worker"])
    for worker in workers:
        try:
            value = float(worker.fields.get(field, ""))
        except ValueError:
            continue
        family.add_metric([worker.worker_id], value)
    return family


class SnapshotCollector(Collector):
    """The metrics of one served model, from one snapshot (made for each scrape)."""

    def __init__(self, snapshot: Snapshot, model: str) -> None:
        self._snapshot = snapshot
        self._model = model

    def collect(self) -> Iterator[Metric]:
        snapshot, m = self._snapshot, self._snapshot.metrics
        yield _gauge(
            "tungsten_queued_inputs",
            "Inputs accepted and not finished yet (waiting or running).",
            snapshot.queued_inputs,
        )
        yield _counter(
            "tungsten_predictions",
            "Predictions that ended, by outcome.",
            "outcome",
            ((o, m.get(f"predictions:{o}", 0)) for o in PREDICTION_OUTCOMES),
        )
        yield _counter(
            "tungsten_inputs",
            "Inputs the workers finished, by outcome (dropped: their prediction had ended).",
            "outcome",
            ((o, m.get(f"inputs:{o}", 0)) for o in INPUT_OUTCOMES),
        )
        yield CounterMetricFamily("tungsten_batches", "Batches the workers ran.", value=m.get("batches", 0))
        yield _histogram("tungsten_batch_size", "Inputs per batch.", BATCH_SIZE, m)
        yield _histogram(
            "tungsten_queue_time_seconds",
            "Time from a prediction's creation until its first input started.",
            QUEUE_TIME,
            m,
        )
        yield _histogram("tungsten_model_time_seconds", "Time the model took per batch.", MODEL_TIME, m)
        yield _histogram(
            "tungsten_prediction_duration_seconds",
            "Time from a prediction's creation until it ended (end to end).",
            PREDICTION_TIME,
            m,
        )
        yield _counter(
            "tungsten_webhook_deliveries",
            "Webhook delivery attempts, by outcome.",
            "outcome",
            ((o, m.get(f"webhooks:{o}", 0)) for o in WEBHOOK_OUTCOMES),
        )
        yield _gauge(
            "tungsten_webhook_events_waiting", "Webhook events not yet handed to RQ.", snapshot.webhook_events_waiting
        )
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        workers = sorted(self._snapshot.workers, key=lambda w: w.worker_id)
        states = dict.fromkeys(WORKER_STATES, 0)
        for worker in workers:
            state = worker.fields.get("state", "unknown")
            states[state] = states.get(state, 0) + 1
        by_state = GaugeMetricFamily(
            "tungsten_workers", "Live workers (their heartbeat is current), by state.", labels=["state"]
        )
        for state, count in states.items():
            by_state.add_metric([state], count)
        yield by_state
        info = GaugeMetricFamily(
            "tungsten_worker_info",
            "One series per live worker, with its details as labels.",
            labels=["worker", "host", "pid", "model", "state"],
        )
        for w in workers:
            f = w.fields
            info.add_metric(
                [w.worker_id, f.get("host", ""), f.get("pid", ""), f.get("model", self._model), f.get("state", "")], 1
            )
        yield info
        yield _per_worker(
            workers, "tungsten_worker_current_batch_size", "Inputs in the batch a worker is running.", "current_batch"
        )
        yield _per_worker(
            workers, "tungsten_worker_inputs_per_second", "Inputs a worker ran per second, last minute.", "inputs_per_s"
        )
        yield _per_worker(
            workers,
            "tungsten_worker_last_heartbeat_timestamp_seconds",
            "When a worker last reported.",
            "heartbeat_unix",
        )
        gpus = [(w.worker_id, gpu) for w in workers for gpu in parse_gpus(w.fields.get("gpus"))]
        for field, help_text in (
            ("allocated", "GPU memory allocated by tensors in a worker."),
            ("reserved", "GPU memory reserved by a worker's caching allocator."),
            ("total", "Total memory of the GPU a worker uses."),
        ):
            family = GaugeMetricFamily(
                f"tungsten_gpu_memory_{field}_bytes", help_text, labels=["worker", "gpu", "name"]
            )
            for worker_id, gpu in gpus:
                value = gpu.get(field)
                if isinstance(value, (int, float)):
                    family.add_metric([worker_id, str(gpu.get("index", "")), str(gpu.get("name", ""))], value)
            yield family


def _registry(snapshot: Snapshot, model: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, model))
    return registry


def render(snapshot: Snapshot, model: str) -> str:
    """The metrics of one served model in the Prometheus text exposition format."""
    return exposition.generate_latest(_registry(snapshot, model)).decode()


def render_openmetrics(snapshot: Snapshot, model: str) -> str:
    """The same in the OpenMetrics text format."""
    return _openmetrics_latest(_registry(snapshot, model)).decode()


async def metrics(request: Request) -> Response:
    serving = request.app.state.serving
    if serving.settings.metrics_require_key:
        await authorize(request, "admin")
    snapshot = await serving.queue.snapshot()  # RedisUnavailable: 503, so the scrape shows as failed
    name = serving.metadata["name"]
    if "application/openmetrics-text" in request.headers.get("accept", ""):
        return Response(render_openmetrics(snapshot, name), media_type=openmetrics.CONTENT_TYPE_LATEST)
    return Response(render(snapshot, name), media_type=CONTENT_TYPE)
