"""What a worker counts for ``/metrics``: inputs and predictions by outcome, batch sizes,
model time, time in queue, end-to-end latency.

Counted in memory and added to Redis by the heartbeat (see ``tungstenkit.worker.redis_threads.Heartbeat``): no
Redis command on the hot path. Times use the stream entries' ids (Redis's clock) against
this machine's clock, so they are exact on one machine and off by the clocks' skew across
machines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tungstenkit._measurements import BATCH_SIZE, MODEL_TIME, PREDICTION_TIME, QUEUE_TIME, MetricDeltas
from tungstenkit._queue import BatchStart, EntryResult, WriteReport

_OUTCOMES = {
    EntryResult.OUTPUTS: "success",
    EntryResult.ERROR: "failed",
    EntryResult.DROPPED: "dropped",
    EntryResult.EXPIRED: "failed",
}


def count_written(
    metrics: MetricDeltas, results: Sequence[EntryResult], started: Sequence[BatchStart], report: WriteReport
) -> None:
    """Count what one write sent and what it found (the writer's ``on_written``, on its thread)."""
    for result in results:
        if result.entry.sid in report.rejected:
            continue  # another worker owns the entry and counts what becomes of it
        # A result that lost the race with its prediction's end (a cancel) was dropped.
        kind = EntryResult.DROPPED if result.entry.sid in report.discarded else result.kind
        metrics.add(f"inputs:{_OUTCOMES[kind]}", result.entry.count)
    for start in started:
        for queued in start.queued_ms:
            if queued:
                metrics.observe(QUEUE_TIME, max(start.at - queued / 1000, 0.0))
    if report.ended:
        now = time.time()
        created = {r.entry.prediction_id: r.entry.queued_at_ms / 1000 for r in results}
        for prediction_id, outcome in report.ended:
            metrics.add(f"predictions:{outcome}")
            if prediction_id in created:
                metrics.observe(PREDICTION_TIME, max(now - created[prediction_id], 0.0))


def record_batch(metrics: MetricDeltas, size: int, model_seconds: float) -> None:
    """One batch ran: its size, and how long the model took (bisection retries included)."""
    metrics.add("batches")
    metrics.observe(BATCH_SIZE, size)
    metrics.observe(MODEL_TIME, model_seconds)
