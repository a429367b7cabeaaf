"""How a worker cuts batches from what is queued (burst mode: no timing involved)."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.support import MODELS, audit_runs
from tungstenkit._loader import load_model
from tungstenkit._model import ModelDefinition
from tungstenkit._queue import AsyncPredictionQueue, Keys, WorkerQueue, split_into_chunks
from tungstenkit._settings import Settings
from tungstenkit.app.inputs import InputParser
from tungstenkit.worker import model_worker
from tungstenkit.worker.model_worker import Worker


@pytest.fixture(scope="module")
def recorder() -> ModelDefinition:
    return load_model(MODELS / "recorder")


class Harness:
    """Queues predictions as the API does, runs a burst worker, reads results."""

    def __init__(self, definition: ModelDefinition, redis_url: str, namespace: str, audit: Path) -> None:
        self.definition = definition
        self.redis_url = redis_url
        self.keys = Keys(namespace)
        self.client = redis.Redis.from_url(redis_url)
        self.parser = InputParser(definition.input_cls, 1000)
        self.audit = audit

    def submit(self, inputs: list[dict[str, Any]], chunk_size: int = 4) -> str:
        async def go() -> str:
            client = redis.asyncio.Redis.from_url(self.redis_url)
            queue = AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=0)
            encoded, groups = self.parser.parse(__import__("json").dumps(inputs).encode())
            prediction_id = __import__("secrets").token_hex(16)
            await queue.submit(prediction_id, split_into_chunks(encoded, groups, chunk_size), len(encoded))
            await client.aclose()
            return prediction_id

        return asyncio.run(go())

    def cancel(self, prediction_id: str) -> None:
        async def go() -> None:
            client = redis.asyncio.Redis.from_url(self.redis_url)
            await AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=0).cancel(prediction_id)
            await client.aclose()

        asyncio.run(go())

    def run(self, batch_size: int | None = None) -> None:
        worker = Worker(self.definition, self.client, self.keys, Settings(), batch_size=batch_size)
        worker.setup()
        worker.run_burst()

    def result(self, prediction_id: str) -> dict[str, Any]:
        fetched = WorkerQueue(self.client, self.keys, result_ttl_s=60).fetch(prediction_id)
        assert fetched is not None
        return __import__("json").loads(fetched.body)  # type: ignore[no-any-return]

    def batches(self) -> list[list[int]]:
        return [xs for _pid, xs in audit_runs(self.audit)]


@pytest.fixture
def harness(
    recorder: ModelDefinition, redis_url: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    audit = tmp_path / "audit.log"
    monkeypatch.setenv("RECORDER_AUDIT", str(audit))
    h = Harness(recorder, redis_url, namespace, audit)
    yield h
    h.client.close()


def test_single_input_requests_share_batches_up_to_the_maximum(harness: Harness) -> None:
    ids = [harness.submit([{"x": i}]) for i in range(10)]
    harness.run()
    assert harness.batches() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    results = [harness.result(p) for p in ids]
    assert [r["status"] for r in results] == ["success"] * 10
    assert [r["outputs"][0]["x"] for r in results] == list(range(10))


def test_a_request_spans_batches_and_keeps_input_order(harness: Harness) -> None:
    prediction_id = harness.submit([{"x": i} for i in range(10)])
    harness.run()
    assert harness.batches() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    result = harness.result(prediction_id)
    assert [o["x"] for o in result["outputs"]] == list(range(10))
    assert [o["batch_size"] for o in result["outputs"]] == [4] * 8 + [2] * 2


def test_batch_size_override_applies(harness: Harness) -> None:
    harness.submit([{"x": i} for i in range(5)], chunk_size=5)
    harness.run(batch_size=2)
    assert harness.batches() == [[0, 1], [2, 3], [4]]


def test_inputs_with_different_options_never_share_a_batch(harness: Harness) -> None:
    groups = ["a", "b", "a", "b", "b", "a", "c"]
    ids = [harness.submit([{"x": i, "group": g}]) for i, g in enumerate(groups)]
    mixed = harness.submit([{"x": 10, "group": "a"}, {"x": 11, "group": "b"}, {"x": 12, "group": "a"}])
    harness.run()
    group_of = {i: g for i, g in enumerate(groups)} | {10: "a", 11: "b", 12: "a"}
    for batch in harness.batches():
        assert len({group_of[x] for x in batch}) == 1, batch
    # The oldest input leads; later inputs of its group join it.
    assert harness.batches()[0] == [0, 2, 5, 10]
    assert all(harness.result(p)["status"] == "success" for p in ids + [mixed])
    assert [o["x"] for o in harness.result(mixed)["outputs"]] == [10, 11, 12]


def test_a_canceled_pending_prediction_never_reaches_predict(harness: Harness) -> None:
    keep = harness.submit([{"x": 1}])
    drop = harness.submit([{"x": 2}, {"x": 3}])
    harness.cancel(drop)
    harness.run()
    assert harness.batches() == [[1]]
    assert harness.result(drop)["status"] == "failed"
    assert harness.result(drop)["error_message"] == "Canceled"
    assert harness.result(keep)["status"] == "success"


def test_an_exception_in_predict_fails_only_its_prediction(harness: Harness) -> None:
    good_before = harness.submit([{"x": 1, "group": "g"}])
    bad = harness.submit([{"x": -5}])
    good_after = harness.submit([{"x": 2, "group": "g"}])
    harness.run()
    failed = harness.result(bad)
    assert failed["status"] == "failed"
    assert failed["error_message"] == "ValueError: negative input -5"
    assert failed["outputs"] is None
    assert harness.result(good_before)["status"] == "success"
    assert harness.result(good_after)["status"] == "success"


def test_queue_is_left_clean(harness: Harness) -> None:
    ids = [harness.submit([{"x": i} for i in range(3)]) for _ in range(3)]
    harness.cancel(ids[1])
    harness.run()
    assert harness.client.xlen(harness.keys.queue) == 0
    assert harness.client.xpending(harness.keys.queue, "workers")["pending"] == 0
    assert int(harness.client.get(harness.keys.queued)) == 0
    assert harness.client.zcard(harness.keys.workers) == 0


def test_batches_report_their_size(harness: Harness) -> None:
    ids = [harness.submit([{"x": i}]) for i in range(6)]
    harness.run()
    sizes = defaultdict(set)
    for p in ids:
        output = harness.result(p)["outputs"][0]
        sizes[output["batch_id"]].add(output["batch_size"])
    assert sorted(len(s) for s in sizes.values()) == [1, 1]
    assert sorted(next(iter(s)) for s in sizes.values()) == [2, 4]


def test_a_poison_input_fails_only_its_own_prediction(harness: Harness) -> None:
    ids = [harness.submit([{"x": x}]) for x in (1, -5, 3, 4)]
    harness.run()
    statuses = [harness.result(p)["status"] for p in ids]
    assert statuses == ["success", "failed", "success", "success"]
    assert harness.result(ids[1])["error_message"] == "ValueError: negative input -5"
    # The batch, its halves, then the failing half's halves.
    assert harness.batches() == [[1, -5, 3, 4], [1, -5], [3, 4], [1], [-5]]


def test_two_poison_inputs_are_both_isolated(harness: Harness) -> None:
    ids = [harness.submit([{"x": x}]) for x in (-1, 2, -3, 4)]
    harness.run()
    assert [harness.result(p)["status"] for p in ids] == ["failed", "success", "failed", "success"]
    assert harness.result(ids[0])["error_message"] == "ValueError: negative input -1"
    assert harness.result(ids[2])["error_message"] == "ValueError: negative input -3"


def test_a_batch_that_fails_as_a_whole_is_not_split_further(harness: Harness) -> None:
    ids = [harness.submit([{"x": -1}]) for _ in range(4)]
    harness.run()
    assert all(harness.result(p)["error_message"] == "ValueError: negative input -1" for p in ids)
    assert len(harness.batches()) == 3  # the batch and its two halves, no more


def test_a_prediction_with_a_poison_input_fails_while_its_batch_mates_succeed(harness: Harness) -> None:
    poisoned = harness.submit([{"x": 1}, {"x": -2}])
    fine = harness.submit([{"x": 3}, {"x": 4}])
    harness.run()
    assert harness.result(poisoned)["status"] == "failed"
    assert harness.result(poisoned)["error_message"] == "ValueError: negative input -2"
    assert [o["x"] for o in harness.result(fine)["outputs"]] == [3, 4]


def test_entries_are_not_split_when_a_later_one_fits(harness: Harness) -> None:
    first = harness.submit([{"x": 1}, {"x": 2}, {"x": 3}])
    second = harness.submit([{"x": 4}, {"x": 5}, {"x": 6}])
    third = harness.submit([{"x": 7}])
    harness.run()
    # A batch never holds part of a request that fits whole in a later batch.
    assert harness.batches() == [[1, 2, 3, 7], [4, 5, 6]]
    assert [o["x"] for o in harness.result(second)["outputs"]] == [4, 5, 6]
    assert harness.result(first)["status"] == harness.result(third)["status"] == "success"


def test_a_batch_out_of_gpu_memory_runs_in_halves_and_caps_later_batches(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDER_OOM_ABOVE", "2")  # batches of more than 2 inputs run out of memory
    ids = [harness.submit([{"x": x}]) for x in (1, 2, 3, 4, 5, 6, 7, 999, 10, 11, 12, 13)]
    harness.run(batch_size=8)
    statuses = [harness.result(p)["status"] for p in ids]
    assert statuses == ["success"] * 7 + ["failed"] + ["success"] * 4
    # Only the input too large even alone fails, with what the model raised.
    assert harness.result(ids[7])["error_message"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 1 GiB"
    assert harness.batches() == [
        [1, 2, 3, 4, 5, 6, 7, 999],
        [1, 2, 3, 4],
        [1, 2],
        [3, 4],
        [5, 6, 7, 999],
        [5, 6],
        [7, 999],
        [7],
        [999],
        # The largest batch that fit is the ceiling from now on.
        [10, 11],
        [12, 13],
    ]


def test_the_ceiling_is_probed_upward_and_backs_off_when_memory_is_still_short(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_worker, "CEILING_PROBE_BATCHES", 2)
    monkeypatch.setenv("RECORDER_OOM_ABOVE", "2")  # the GPU stays short: batches over 2 never fit
    ids = [harness.submit([{"x": x}]) for x in range(1, 4 * 5 + 1)]
    harness.run(batch_size=4)
    assert all(harness.result(p)["status"] == "success" for p in ids)  # nothing fails, nothing loops
    assert harness.batches() == [
        [1, 2, 3, 4],
        [1, 2],
        [3, 4],  # out of memory: the ceiling is 2
        [5, 6],
        [7, 8],  # two full batches at the ceiling ...
        [9, 10, 11, 12],
        [9, 10],
        [11, 12],  # ... then a probe at 4, which does not fit yet
        [13, 14],
        [15, 16],
        [17, 18],
        [19, 20],  # the next probe waits twice as long
    ]


def test_a_probe_that_fits_lifts_the_ceiling(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_worker, "CEILING_PROBE_BATCHES", 2)
    monkeypatch.setenv("RECORDER_OOM_ABOVE", "2")

    class MemoryComesBack(Worker):
        def _fitted(self, size: int) -> None:
            super()._fitted(size)
            if self.batch_ceiling is None:  # by the time the ceiling is lifted, memory came back
                os.environ["RECORDER_OOM_ABOVE"] = "4"

    ids = [harness.submit([{"x": x}]) for x in range(1, 17)]
    worker = MemoryComesBack(harness.definition, harness.client, harness.keys, Settings(), batch_size=4)
    worker.setup()
    worker.run_burst()
    assert all(harness.result(p)["status"] == "success" for p in ids)
    assert harness.batches() == [
        [1, 2, 3, 4],
        [1, 2],
        [3, 4],  # out of memory at 4: a ceiling of 2
        [5, 6],
        [7, 8],  # two full batches at it ...
        [9, 10, 11, 12],
        [13, 14, 15, 16],  # ... so the next may hold 4 again, and they fit
    ]
    assert worker.max_batch_size == 4
