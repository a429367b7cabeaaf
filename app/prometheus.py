"""``GET /metrics``: the Prometheus text format, from what Redis holds for the namespace.

Every number comes from Redis (the metrics hash and the workers' heartbeats), so any
API process answers the same, however many API processes and workers there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
from tungstenkit._queue import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Worker states, so that each has a series (0 when no worker is in it).
WORKER_STATES = ("starting", "setup", "ready", "busy", "stopping", "failed")
_ESCAPES = re.compile(r'[\\"\n]')


def _label_value(value: object) -> str:
    return _ESCAPES.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group()], str(value))


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_label_value(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, metric: str, value: float, **labels: object) -> None:
        self.lines.append(f"{metric}{_labels(**labels)} {_number(value)}")

    def counter(self, name: str, help_text: str, label: str, values: Iterable[tuple[str, float]]) -> None:
        self.family(name, "counter", help_text)
        for key, value in values:
            self.sample(name, value, **{label: key})

    def histogram(self, name: str, help_text: str, histogram: Histogram, metrics: dict[str, float]) -> None:
        self.family(name, "histogram", help_text)
        total = 0.0
        for label in histogram.labels():
            total += metrics.get(f"{histogram.field}:le:{label}", 0)
            self.sample(f"{name}_bucket", total, le=label)
        self.sample(f"{name}_sum", metrics.get(f"{histogram.field}:sum", 0.0))
        self.sample(f"{name}_count", total)


def render(snapshot: Snapshot, model: str) -> str:
    """The metrics of one served model in the Prometheus text exposition format."""
    m = snapshot.metrics
    out = _Text()
    out.family("tungsten_queued_inputs", "gauge", "Inputs accepted and not finished yet (waiting or running).")
    out.sample("tungsten_queued_inputs", snapshot.queued_inputs)
    out.counter(
        "tungsten_predictions_total", "Predictions that ended, by outcome.", "outcome",
        ((o, m.get(f"predictions:{o}", 0)) for o in PREDICTION_OUTCOMES),
    )
    out.counter(
        "tungsten_inputs_total", "Inputs the workers finished, by outcome (dropped: their prediction had ended).",
        "outcome", ((o, m.get(f"inputs:{o}", 0)) for o in INPUT_OUTCOMES),
    )
    out.family("tungsten_batches_total", "counter", "Batches the workers ran.")
    out.sample("tungsten_batches_total", m.get("batches", 0))
    out.histogram("tungsten_batch_size", "Inputs per batch.", BATCH_SIZE, m)
    out.histogram(
        "tungsten_queue_time_seconds", "Time from a prediction's creation until its first input started.",
        QUEUE_TIME, m,
    )
    out.histogram("tungsten_model_time_seconds", "Time the model took per batch.", MODEL_TIME, m)
    out.histogram(
        "tungsten_prediction_duration_seconds", "Time from a prediction's creation until it ended (end to end).",
        PREDICTION_TIME, m,
    )
    out.counter(
        "tungsten_webhook_deliveries_total", "Webhook delivery attempts, by outcome.", "outcome",
        ((o, m.get(f"webhooks:{o}", 0)) for o in WEBHOOK_OUTCOMES),
    )
    out.family("tungsten_webhook_events_waiting", "gauge", "Webhook events not yet handed to RQ.")
    out.sample("tungsten_webhook_events_waiting", snapshot.webhook_events_waiting)

    workers = sorted(snapshot.workers, key=lambda w: w.worker_id)
    states = {state: 0 for state in WORKER_STATES}
    for worker in workers:
        state = worker.fields.get("state", "unknown")
        states[state] = states.get(state, 0) + 1
    out.family("tungsten_workers", "gauge", "Live workers (their heartbeat is current), by state.")
    for state, count in states.items():
        out.sample("tungsten_workers", count, state=state)
    out.family("tungsten_worker_info", "gauge", "One series per live worker, with its details as labels.")
    for w in workers:
        f = w.fields
        out.sample(
            "tungsten_worker_info", 1, worker=w.worker_id, host=f.get("host", ""), pid=f.get("pid", ""),
            model=f.get("model", model), state=f.get("state", ""),
        )
    _per_worker(out, workers, "tungsten_worker_current_batch_size", "Inputs in the batch a worker is running.",
                "current_batch")
    _per_worker(out, workers, "tungsten_worker_inputs_per_second", "Inputs a worker ran per second, last minute.",
                "inputs_per_s")
    _per_worker(out, workers, "tungsten_worker_last_heartbeat_timestamp_seconds", "When a worker last reported.",
                "heartbeat_unix")
    gpus = [(w.worker_id, gpu) for w in workers for gpu in parse_gpus(w.fields.get("gpus"))]
    for field, help_text in (
        ("allocated", "GPU memory allocated by tensors in a worker."),
        ("reserved", "GPU memory reserved by a worker's caching allocator."),
        ("total", "Total memory of the GPU a worker uses."),
    ):
        name = f"tungsten_gpu_memory_{field}_bytes"
        out.family(name, "gauge", help_text)
        for worker_id, gpu in gpus:
            value = gpu.get(field)
            if isinstance(value, (int, float)):
                out.sample(name, value, worker=worker_id, gpu=gpu.get("index", ""), name=gpu.get("name", ""))
    return "\n".join(out.lines) + "\n"


def _per_worker(out: _Text, workers: list, name: str, help_text: str, field: str) -> None:
    out.family(name, "gauge", help_text)
    for worker in workers:
        try:
            value = float(worker.fields.get(field, ""))
        except ValueError:
            continue
        out.sample(name, value, worker=worker.worker_id)


async def metrics(request: Request) -> Response:
    serving = request.app.state.serving
    snapshot = await serving.queue.snapshot()  # RedisUnavailable: 503, so the scrape shows as failed
    return Response(render(snapshot, serving.metadata["name"]), media_type=CONTENT_TYPE)
