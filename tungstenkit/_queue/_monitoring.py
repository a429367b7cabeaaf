"""What monitoring reads: workers, queue depth, metrics (``/metrics``, ``/health``, ``tungsten status``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tungstenkit._queue._keys import Keys


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Snapshot:
    """One namespace's state as monitoring shows it."""

    queued_inputs: int
    #: The metrics hash (``tungstenkit._measurements`` names its fields).
    metrics: dict[str, float]
    workers: list[WorkerInfo]
    #: Webhook events not yet handed to RQ.
    webhook_events_waiting: int


def live_workers(ids: Iterable[bytes], found: Iterable[dict[bytes, bytes]]) -> list[WorkerInfo]:
    workers = []
    for worker_id, fields in zip(ids, found):
        if fields:
            workers.append(WorkerInfo(worker_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return workers


def ask_snapshot(pipe: Any, keys: Keys) -> None:
    """Queue a snapshot's first round trip on ``pipe`` (sync or asyncio)."""
    pipe.get(keys.queued)
    pipe.hgetall(keys.metrics)
    pipe.zrange(keys.workers, 0, -1)
    pipe.llen(keys.webhooks)
    pipe.llen(keys.webhooks_dispatching)


def make_snapshot(first: Sequence[Any], found: Sequence[dict[bytes, bytes]]) -> Snapshot:
    queued, metrics, ids, waiting, dispatching = first
    return Snapshot(
        queued_inputs=int(queued or 0),
        metrics={k.decode(): float(v) for k, v in metrics.items()},
        workers=live_workers(ids, found),
        webhook_events_waiting=int(waiting) + int(dispatching),
    )


def read_snapshot(client: redis.Redis, keys: Keys) -> Snapshot:
    """``AsyncPredictionQueue.snapshot`` for blocking callers (``tungsten status``)."""
    with client.pipeline(transaction=False) as pipe:
        ask_snapshot(pipe, keys)
        first = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for worker_id in first[2]:
            pipe.hgetall(keys.worker(worker_id.decode()))
        found = pipe.execute()
    return make_snapshot(first, found)


def find_namespaces(client: redis.Redis) -> list[str]:
    """The namespaces that have a queue in this Redis (one per served model)."""
    found = set()
    for key in client.scan_iter(match="tungsten:{*}:queue", count=1000, _type="stream"):
        name = key.decode() if isinstance(key, bytes) else key
        found.add(name[len("tungsten:{") : -len("}:queue")])
    return sorted(found)
