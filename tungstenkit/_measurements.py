"""What the server measures, shared by the Lua scripts, the workers, the API and ``tungsten status``.

Counters and histograms live in one Redis hash per namespace (``Keys.metrics``), so
every API process reports the same numbers however many workers and API processes
there are. Fields:

    predictions:<outcome>        predictions that ended: success, failed, canceled
    inputs:<outcome>             inputs the workers finished: success, failed, dropped
    batches                      batches run
    <histogram>:le:<bound>       observations in the bucket ending at <bound> (not
                                 cumulative; ``+Inf`` for the last)
    <histogram>:sum              sum of the observations
    webhooks:<outcome>           webhook deliveries: delivered, retried, failed

The Lua scripts that start and end predictions record queue time and end-to-end
latency; workers add their batch metrics to the hash with each heartbeat (one round
trip a second, whatever the batch rate). No module here imports redis or torch.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Buckets (upper bounds) of the histograms in seconds.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
#: Buckets of the batch size histogram.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Histogram:
    """A histogram kept as hash fields ``<field>:le:<bound>`` and ``<field>:sum``."""

    field: str
    buckets: tuple[float, ...]

    def labels(self) -> list[str]:
        return [bound_label(b) for b in self.buckets] + ["+Inf"]

    def bucket_field(self, value: float) -> str:
        for bound in self.buckets:
            if value <= bound:
                return f"{self.field}:le:{bound_label(bound)}"
        return f"{self.field}:le:+Inf"


def bound_label(bound: float) -> str:
    """A bucket bound as Prometheus and the hash fields write it (``1``, ``0.25``)."""
    return f"{bound:g}"


#: Seconds from a prediction's creation until its first input started (recorded in Lua).
QUEUE_TIME = Histogram("queue_seconds", SECONDS_BUCKETS)
#: Seconds from a prediction's creation until it ended (recorded in Lua).
PREDICTION_TIME = Histogram("prediction_seconds", SECONDS_BUCKETS)
#: Seconds the model took per batch, bisection retries included (recorded by workers).
MODEL_TIME = Histogram("model_seconds", SECONDS_BUCKETS)
#: Inputs per batch (recorded by workers).
BATCH_SIZE = Histogram("batch_size", BATCH_SIZE_BUCKETS)

PREDICTION_OUTCOMES = ("success", "failed", "canceled")
INPUT_OUTCOMES = ("success", "failed", "dropped")
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")


def lua_prelude() -> str:
    """Lua definitions of the histograms the scripts record, generated from the ones above."""

    def table(values: Sequence[object]) -> str:
        return "{" + ", ".join(str(v) for v in values) + "}"

    bounds = table(SECONDS_BUCKETS)
    labels = table([f"'{bound_label(b)}'" for b in SECONDS_BUCKETS])
    return f"local SECONDS_BOUNDS = {bounds}\nlocal SECONDS_LABELS = {labels}\n"


class MetricDeltas:
    """Counts and observations a worker gathers between two heartbeats (thread-safe).

    ``take()`` hands them to the heartbeat, which adds them to Redis; if that fails they
    are put back with ``restore()`` and go with the next one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<MetricDeltas {len(self._values)} fields>"

    def add(self, field: str, amount: float = 1) -> None:
        with self._lock:
            self._values[field] = self._values.get(field, 0) + amount

    def observe(self, histogram: Histogram, value: float) -> None:
        with self._lock:
            bucket = histogram.bucket_field(value)
            self._values[bucket] = self._values.get(bucket, 0) + 1
            total = f"{histogram.field}:sum"
            self._values[total] = self._values.get(total, 0.0) + float(value)

    def take(self) -> dict[str, float]:
        with self._lock:
            values, self._values = self._values, {}
        return values

    def restore(self, values: Mapping[str, float]) -> None:
        with self._lock:
            for field, amount in values.items():
                self._values[field] = self._values.get(field, 0) + amount


class ThroughputMeter:
    """Inputs per second over the last ``window_s``, from a running count sampled now and then."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._window = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def rate(self, count: int, now: float | None = None) -> float:
        """Record ``count`` (a running total) and return the rate over the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, count))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
                self._samples.popleft()
            then, before = self._samples[0]
        return (count - before) / (now - then) if now > then else 0.0


def gpu_memory() -> list[dict[str, object]]:
    """Memory of each GPU torch uses in this process; empty unless the model already
    imported torch and initialised CUDA (this never imports torch or touches a GPU itself)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return []
    try:
        if not cuda.is_available() or not cuda.is_initialized():
            return []
        found: list[dict[str, object]] = []
        for index in range(cuda.device_count()):
            properties = cuda.get_device_properties(index)
            found.append(
                {
                    "index": index,
                    "name": str(properties.name),
                    "allocated": int(cuda.memory_allocated(index)),
                    "reserved": int(cuda.memory_reserved(index)),
                    "total": int(properties.total_memory),
                }
            )
        return found
    except Exception:  # noqa: BLE001 - a metric must never take a worker down
        return []


def parse_gpus(raw: str | None) -> list[dict[str, object]]:
    """The ``gpus`` field of a worker's heartbeat, as written from ``gpu_memory()``."""
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [g for g in value if isinstance(g, dict)] if isinstance(value, list) else []
