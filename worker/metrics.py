"""What a worker counts for ``/metrics``: inputs by outcome, batch sizes, model time.

Counted in memory and added to Redis by the heartbeat (see ``worker.io.Heartbeat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tungstenkit._metrics import BATCH_SIZE, MODEL_TIME, MetricDeltas
from tungstenkit._queue import EntryResult
from worker.io import Writer

_OUTCOMES = {EntryResult.OUTPUTS: "success", EntryResult.ERROR: "failed", EntryResult.DROPPED: "dropped"}


class MeteredWriter(Writer):
    """A ``Writer`` that counts the inputs of the results it is handed, by outcome."""

    def __init__(self, *args: Any, metrics: MetricDeltas, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    def results(self, results: Sequence[EntryResult]) -> None:
        for result in results:
            self._metrics.add(f"inputs:{_OUTCOMES[result.kind]}", result.entry.count)
        super().results(results)


def record_batch(metrics: MetricDeltas, size: int, model_seconds: float) -> None:
    """One batch ran: its size, and how long the model took (bisection retries included)."""
    metrics.add("batches")
    metrics.observe(BATCH_SIZE, size)
    metrics.observe(MODEL_TIME, model_seconds)
