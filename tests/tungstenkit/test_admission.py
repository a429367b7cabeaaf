"""Admission by priority and tenant (``lua/admission.lua``), driven against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from tungstenkit._queue import (
    AsyncPredictionQueue,
    Entry,
    EntryResult,
    Keys,
    WorkerQueue,
    sid_ms,
    split_into_chunks,
)

BATCH = 4  # the workers hold 2 batches (8 inputs) before entries wait


class Admission:
    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.keys = Keys(namespace)
        self.client = redis.Redis.from_url(url)
        self.worker = WorkerQueue(self.client, self.keys, result_ttl_s=60, batch_size=BATCH)
        self.worker.ensure_group()

    def submit(self, requests: list[tuple[str, int, str, str]]) -> None:
        """(id, inputs, priority, tenant) each, sent together as one script call."""

        async def go() -> Any:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                api = AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=0, batch_size=BATCH)
                calls = []
                for prediction_id, n, priority, tenant in requests:
                    inputs = [json.dumps({"x": f"{prediction_id}:{i}"}) for i in range(n)]
                    chunks = split_into_chunks(inputs, ["g"] * n, BATCH)
                    calls.append(api.submit(prediction_id, chunks, n, priority=priority, tenant=tenant))
                return await asyncio.gather(*calls)
            finally:
                await client.aclose()

        asyncio.run(go())

    def cancel(self, prediction_id: str) -> None:
        async def go() -> Any:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                api = AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=0, batch_size=BATCH)
                return await api.cancel(prediction_id)
            finally:
                await client.aclose()

        asyncio.run(go())

    def read(self, count: int = 100) -> list[Entry]:
        return self.worker.read("w1", count, None)

    def finish(self, entries: list[Entry]) -> None:
        results = [
            EntryResult(e, EntryResult.OUTPUTS, ",".join(json.dumps({"y": x["x"]}) for x in json.loads(e.data)))
            for e in entries
        ]
        self.worker.write("w1", [], results)

    def run_all(self) -> list[str]:
        """Read and finish a batch's worth at a time until nothing is left; the prediction
        ids in the order their entries were read."""
        order: list[str] = []
        while entries := self.read(2):
            order += [e.prediction_id for e in entries]
            self.finish(entries)
        return order

    def waiting(self) -> int:
        return int(self.client.get(self.keys.prefix + "waiting") or 0)


@pytest.fixture
def admission(redis_url: str, namespace: str) -> Iterator[Admission]:
    found = Admission(redis_url, namespace)
    yield found
    found.client.close()


def test_with_room_entries_go_straight_to_the_workers(admission: Admission) -> None:
    admission.submit([("a", 4, "normal", "A"), ("b", 4, "low", "B")])
    assert admission.waiting() == 0
    assert [e.prediction_id for e in admission.read()] == ["a", "b"]


def test_one_tenant_flooding_does_not_delay_another_by_more_than_a_batch(admission: Admission) -> None:
    admission.submit([(f"a{i}", 4, "normal", "A") for i in range(500)])  # 2,000 inputs
    assert admission.waiting() == 2000 - 2 * BATCH
    admission.submit([("b", 1, "normal", "B")])
    order = admission.run_all()
    assert len(order) == 501
    # Ahead of b: what the workers held when it came (two batches), and one turn of A's.
    assert order.index("b") == 2
    assert admission.waiting() == 0 and int(admission.client.get(admission.keys.queued)) == 0


def test_an_admitted_entry_keeps_the_time_it_was_queued(admission: Admission) -> None:
    admission.submit([(f"a{i}", 4, "normal", "A") for i in range(4)])
    first, second = admission.read()
    admission.finish([first, second])
    admitted = admission.read()
    assert [e.prediction_id for e in admitted] == ["a2", "a3"]
    for entry in admitted:
        # Its id is from its admission; the time in queue counts from its submit.
        assert entry.queued_ms and entry.queued_at_ms == entry.queued_ms
        assert sid_ms(first.sid) <= entry.queued_ms <= sid_ms(entry.sid)


def test_tenants_take_turns(admission: Admission) -> None:
    admission.submit([(f"a{i}", 4, "normal", "A") for i in range(20)])
    admission.submit([(f"b{i}", 4, "normal", "B") for i in range(5)])
    order = admission.run_all()
    first_b, last_b = order.index("b0"), order.index("b4")
    # After the entries already admitted, A and B alternate until B has nothing left.
    assert first_b <= 3 and last_b - first_b <= 2 * 4 + 1


def test_higher_priorities_go_first_and_lower_ones_still_get_their_turns(admission: Admission) -> None:
    admission.submit([(f"low{i}", 4, "low", "A") for i in range(40)])
    admission.submit([(f"high{i}", 4, "high", "A") for i in range(40)])
    admission.submit([("urgent", 1, "high", "B")])
    order = admission.run_all()
    assert order.index("urgent") == 2
    lows_admitted_among_highs = [p for p in order[2 : order.index("high39")] if p.startswith("low")]
    # 1 turn in 7 goes to low while high waits: never starved.
    highs = sum(p.startswith("high") or p == "urgent" for p in order[2 : order.index("high39") + 1])
    assert len(lows_admitted_among_highs) >= highs // 7 - 1 > 0


def test_a_canceled_waiting_prediction_leaves_the_waiting_stream(admission: Admission) -> None:
    admission.submit([(f"a{i}", 4, "normal", "A") for i in range(3)])
    admission.submit([("b", 8, "normal", "B")])
    assert admission.waiting() == 4 + 8
    admission.cancel("b")
    assert admission.waiting() == 4
    assert int(admission.client.get(admission.keys.queued)) == 12
    assert admission.run_all() == ["a0", "a1", "a2"]
    assert admission.waiting() == 0 and int(admission.client.get(admission.keys.queued)) == 0


def test_the_room_a_cancel_makes_admits_what_waits(admission: Admission) -> None:
    admission.submit([("a0", 4, "normal", "A"), ("a1", 4, "normal", "A"), ("b", 4, "normal", "B")])
    assert admission.waiting() == 4
    admission.cancel("a1")  # admitted, not yet read: its room goes to b at once
    assert admission.waiting() == 0
    assert [e.prediction_id for e in admission.read()] == ["a0", "b"]


def _announced(pubsub: Any) -> list[str]:
    """The waiting streams announced on the waits channel so far."""
    found = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            found.append(message["data"].decode())
    return found


def test_read_ahead_steps_aside_once_for_higher_priority_work_that_starts_waiting(admission: Admission) -> None:
    pubsub = admission.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(admission.keys.waits_channel)
    _announced(pubsub)
    admission.submit([(f"low{i}", 4, "low", "A") for i in range(6)])
    running, ahead = admission.read(1), admission.read(1)  # a batch running, one read ahead
    assert [e.prediction_id for e in running + ahead] == ["low0", "low1"]
    assert ahead[0].priority == "low" and ahead[0].tenant == "A" and not ahead[0].stepped_aside
    # One tenant's work of one priority waiting alone is not announced.
    assert _announced(pubsub) == []
    admission.submit([("urgent", 1, "high", "B"), ("urgent2", 1, "high", "B")])
    [message] = _announced(pubsub)
    started = admission.worker.wait_started(message)
    assert started is not None and (started.priority, started.tenant) == ("high", "B")
    assert started.outranks(ahead[0])
    assert not started.outranks(dataclasses.replace(ahead[0], priority="high", tenant="B"))
    assert started.outranks(dataclasses.replace(ahead[0], priority="high"))  # another tenant's
    waiting, queued = admission.waiting(), int(admission.client.get(admission.keys.queued))
    assert admission.worker.step_aside("w1", started, ahead) == {ahead[0].sid}
    # urgent went in its place (up to as many inputs as stepped aside: both of B's), the
    # read-ahead right behind them; queued is unchanged, and what waits less by 2.
    after = admission.read()
    assert [e.prediction_id for e in after] == ["urgent", "urgent2", "low1"]
    assert after[2].stepped_aside and after[2].priority == "low"
    assert after[2].queued_at_ms == ahead[0].queued_at_ms  # it keeps the time it was queued
    assert not started.outranks(after[2])  # never twice
    assert admission.waiting() == waiting - 2
    assert int(admission.client.get(admission.keys.queued)) == queued
    # Nothing waits there any more: a second worker's read-ahead stays its own.
    assert admission.worker.step_aside("w1", started, [after[2]]) == set()
    assert [e.prediction_id for e in after] == ["urgent", "urgent2", "low1"]
    admission.finish(running + after)
    assert admission.run_all() == ["low2", "low3", "low4", "low5"]
    assert admission.waiting() == 0 and int(admission.client.get(admission.keys.queued)) == 0
    pubsub.close()


def test_another_tenant_that_starts_waiting_is_announced(admission: Admission) -> None:
    pubsub = admission.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(admission.keys.waits_channel)
    _announced(pubsub)
    admission.submit([(f"a{i}", 4, "normal", "A") for i in range(6)])
    admission.submit([("a6", 4, "normal", "A")])  # A's stream goes on waiting: nothing new
    assert _announced(pubsub) == []
    admission.submit([("b", 1, "normal", "B")])
    [message] = _announced(pubsub)
    started = admission.worker.wait_started(message)
    assert started is not None and (started.priority, started.tenant) == ("normal", "B")
    [entry] = admission.read(1)
    assert entry.priority == "normal" and entry.tenant == "A" and started.outranks(entry)
    assert admission.worker.wait_started("tungsten:{other}:wait:high:B") is None
    pubsub.close()
