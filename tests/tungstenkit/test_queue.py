"""The Redis data model's transitions, driven directly against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
import redis.asyncio

from tungstenkit._errors import PredictionNotFound, QueueFull
from tungstenkit._queue import (
    GROUP,
    AsyncPredictionQueue,
    BatchStart,
    Entry,
    EntryResult,
    Keys,
    StoredFile,
    WorkerQueue,
    parse_done_message,
    read_prediction,
    render_body,
    split_into_chunks,
)
from tungstenkit._queue._prediction_queue import Idempotency, Submission, submit_call
from tungstenkit._queue._scripts import script


class Queues:
    def __init__(self, url: str, namespace: str, limit: int = 0) -> None:
        self.url = url
        self.keys = Keys(namespace)
        self.limit = limit
        self.client = redis.Redis.from_url(url)
        self.worker = WorkerQueue(self.client, self.keys, result_ttl_s=60)
        self.worker.ensure_group()

    def _api(self, method: str, *args: Any) -> Any:
        async def go() -> Any:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                api = AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=self.limit)
                return await getattr(api, method)(*args)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def submit(self, prediction_id: str, n: int, chunk: int = 4, groups: list[str] | None = None) -> None:
        inputs = [json.dumps({"x": i}) for i in range(n)]
        self._api("submit", prediction_id, split_into_chunks(inputs, groups or ["g"] * n, chunk), n)

    def cancel(self, prediction_id: str) -> dict[str, Any]:
        return json.loads(self._api("cancel", prediction_id))

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        fetched = self.worker.fetch(prediction_id)
        return None if fetched is None else json.loads(fetched.body)

    def start(
        self, prediction_ids: list[str], sids: list[str] = (), worker: str = "w1", whole: bool = False
    ) -> set[str]:
        start = BatchStart(prediction_ids, list(sids), [whole] * len(prediction_ids), [False] * len(prediction_ids))
        return self.worker.write(worker, [start], []).ended_before_start[0]

    def finish(self, results: list[EntryResult], worker: str = "w1") -> list[tuple[str, str]]:
        return self.worker.write(worker, [], results).ended

    def read(self, count: int = 100) -> list[Entry]:
        return self.worker.read("w1", count, None)

    def queued(self) -> int:
        return int(self.client.get(self.keys.queued) or 0)


@pytest.fixture
def queues(redis_url: str, namespace: str) -> Iterator[Queues]:
    q = Queues(redis_url, namespace)
    yield q
    q.client.close()


def _outputs(entry: Entry) -> EntryResult:
    xs = json.loads(entry.data)
    return EntryResult(entry, EntryResult.OUTPUTS, ",".join(json.dumps({"y": x["x"]}) for x in xs))


def test_split_into_chunks_respects_size_and_groups() -> None:
    chunks = split_into_chunks(["1", "2", "3", "4", "5"], ["a", "a", "a", "b", "a"], 2)
    assert [(c.start, c.count, c.group, c.data) for c in chunks] == [
        (0, 2, "a", "[1,2]"),
        (2, 1, "a", "[3]"),
        (3, 1, "b", "[4]"),
        (4, 1, "a", "[5]"),
    ]


def test_a_plain_submit_sends_its_options_as_one_empty_argument() -> None:
    # The submit of bench (b) has no webhook, key, owner, deadline or priority: the API
    # packs every argument in Python, so those cost one argument, not eight.
    keys = Keys("ns")
    chunks = split_into_chunks(["1"], ["g"], 32)
    plain = Submission("p", chunks, 1, "", "")
    names, args = submit_call(keys, [plain], limit=0, ttl_s=60)
    assert len(names) == 2 + 2 and len(args) == 4 + 4 + 4
    assert args[4:8] == ["p", 1, 1, ""]
    keyed = Submission("q", chunks, 1, "https://h.example/x", "completed", Idempotency("d", "f"), priority="low")
    _, args = submit_call(keys, [plain, keyed], limit=0, ttl_s=60)
    assert json.loads(args[15]) == ["https://h.example/x", "completed", "f", "", 0, 0, "low", "-"]


def test_lifecycle_pending_running_success(queues: Queues) -> None:
    queues.submit("p", 3)
    assert queues.get("p")["status"] == "pending"
    assert queues.queued() == 3
    (entry,) = queues.read()
    assert queues.start(["p"]) == set()
    assert queues.get("p")["status"] == "running"
    queues.finish([_outputs(entry)])
    result = queues.get("p")
    assert result["status"] == "success"
    assert result["outputs"] == [{"y": 0}, {"y": 1}, {"y": 2}]
    assert queues.queued() == 0
    assert queues.client.xlen(queues.keys.queue) == 0
    assert 0 < queues.client.ttl(queues.keys.prediction("p")) <= 60


def test_outputs_of_several_entries_assemble_in_input_order(queues: Queues) -> None:
    queues.submit("p", 10, chunk=4)
    entries = queues.read()
    assert [e.count for e in entries] == [4, 4, 2]
    queues.start(["p"])
    for entry in reversed(entries):  # finish out of order
        queues.finish([_outputs(entry)])
    assert queues.get("p")["outputs"] == [{"y": i} for i in range(10)]
    assert not [f for f in queues.client.hkeys(queues.keys.prediction("p")) if f.startswith(b"o:")]


def test_a_duplicate_result_is_harmless(queues: Queues) -> None:
    queues.submit("p", 8, chunk=4)
    first, second = queues.read()
    queues.start(["p"])
    assert queues.worker.write("w1", [], [_outputs(first)]).discarded == set()
    queues.finish([_outputs(first)])  # e.g. a reclaimed entry finished twice
    assert queues.get("p")["status"] == "running"
    queues.finish([_outputs(second)])
    assert queues.get("p")["outputs"] == [{"y": i} for i in range(8)]
    assert queues.queued() == 0


def test_an_error_fails_the_prediction_and_drops_its_other_entries(queues: Queues) -> None:
    queues.submit("p", 8, chunk=4)
    first, _second = queues.read(1) + [None]  # the second entry is still unread
    queues.start(["p"])
    queues.finish([EntryResult(first, EntryResult.ERROR, "ValueError: bad")])
    result = queues.get("p")
    assert result["status"] == "failed" and result["error_message"] == "ValueError: bad"
    assert queues.read() == []  # the unread entry left the stream
    assert queues.queued() == 0


def test_cancel_pending_and_running(queues: Queues) -> None:
    queues.submit("pending", 2)
    queues.submit("running", 2)
    entries = queues.read()
    queues.start(["running"])
    pubsub = queues.client.pubsub()
    pubsub.subscribe(queues.keys.stop_channel)
    assert queues.cancel("pending")["error_message"] == "Canceled"
    assert queues.cancel("running")["status"] == "failed"
    # A late result for the canceled prediction is discarded, and reported so (counted as
    # dropped, not as a success).
    report = queues.worker.write("w1", [], [_outputs(e) for e in entries])
    assert report.ended == [] and report.rejected == set()
    assert report.discarded == {e.sid for e in entries}
    assert queues.get("running")["error_message"] == "Canceled"
    assert queues.get("running")["outputs"] is None
    assert queues.queued() == 0
    heard = [m["data"] for m in iter(lambda: pubsub.get_message(timeout=0.2), None) if m["type"] == "message"]
    assert heard == [b"pending", b"running"]
    pubsub.close()


def test_cancel_of_an_ended_prediction_changes_nothing(queues: Queues) -> None:
    queues.submit("p", 1)
    (entry,) = queues.read()
    queues.start(["p"])
    queues.finish([_outputs(entry)])
    before = queues.get("p")
    assert queues.cancel("p") == before
    with pytest.raises(PredictionNotFound):
        queues.cancel("nope")


def test_start_reports_predictions_that_already_ended(queues: Queues) -> None:
    queues.submit("a", 1)
    queues.submit("b", 1)
    queues.read()
    queues.cancel("b")
    assert queues.start(["a", "b", "missing"]) == {"b", "missing"}


def test_a_caller_that_gave_up_leaves_the_others_of_its_round_trip_answered(queues: Queues) -> None:
    queues.submit("p", 1)

    async def go() -> Any:
        client = redis.asyncio.Redis.from_url(queues.url)
        api = AsyncPredictionQueue(client, queues.keys, result_ttl_s=60, max_queued_inputs=0)
        try:
            gave_up = asyncio.ensure_future(api.fetch("p"))
            answered = asyncio.ensure_future(api.fetch("p"))
            await asyncio.sleep(0)  # both ask in this turn of the loop: they share one round trip
            gave_up.cancel()  # its client went away while the round trip was under way
            return await asyncio.wait_for(answered, 5)
        finally:
            await client.aclose()

    fetched = asyncio.run(go())
    assert fetched is not None and json.loads(fetched.body)["status"] == "pending"


def test_the_queue_bound_refuses_and_releases(redis_url: str, namespace: str) -> None:
    queues = Queues(redis_url, namespace, limit=5)
    queues.submit("a", 3)
    with pytest.raises(QueueFull):
        queues.submit("b", 3)
    assert queues.get("b") is None
    queues.submit("c", 2)
    queues.cancel("a")
    queues.submit("d", 3)
    assert queues.queued() == 5
    queues.client.close()


def test_requeue_hands_entries_back_for_another_worker(queues: Queues) -> None:
    queues.submit("p", 8, chunk=4)
    queues.submit("q", 1)
    entries = queues.read()
    assert queues.worker.requeue("w1", entries) == 3
    assert queues.client.xpending(queues.keys.queue, GROUP)["pending"] == 0
    again = queues.worker.read("c2", 100, None)
    assert [(e.prediction_id, e.start) for e in again] == [("p", 0), ("p", 4), ("q", 0)]
    queues.start(["p", "q"], worker="c2")
    queues.finish([_outputs(e) for e in again], worker="c2")
    assert queues.get("p")["outputs"] == [{"y": i} for i in range(8)]
    assert queues.queued() == 0


def test_open_predictions_render_pending_or_running() -> None:
    running = read_prediction([None, b"t0", b"t1"])
    assert running is not None and not running.ended
    assert json.loads(running.body) == {
        "outputs": None,
        "status": "running",
        "error_message": None,
        "created_at": "t0",
        "started_at": "t1",
        "completed_at": None,
        "progress": None,
        "logs": None,
    }
    with_progress = read_prediction([None, b"t0", b"t1", b'{"step":1,"total":2,"message":""}', b"line\n"])
    assert with_progress is not None
    assert json.loads(with_progress.body)["progress"] == {"step": 1, "total": 2, "message": ""}
    assert json.loads(with_progress.body)["logs"] == "line\n"
    assert json.loads(read_prediction([None, b"t0", None]).body)["status"] == "pending"  # type: ignore[union-attr]
    assert read_prediction([None, None, None]) is None


def test_python_and_lua_render_the_same_body(queues: Queues) -> None:
    message = 'ValueError: "quoted"\n/slashes/ and ünïcode'
    in_lua = queues.client.eval(
        script("cancel").source.split("local body, released")[0]
        + "return {render('failed', nil, ARGV[1], 't0', '', 't2'), render('failed', nil, ARGV[1], 't0', '', 't2', ARGV[2], ARGV[1])}",
        0,
        message,
        '{"step":1,"total":2,"message":"m"}',
    )
    assert json.loads(in_lua[0]) == json.loads(render_body("failed", None, message, "t0", "", "t2"))
    progress = '{"step":1,"total":2,"message":"m"}'
    assert json.loads(in_lua[1]) == json.loads(render_body("failed", None, message, "t0", "", "t2", progress, message))


def test_done_messages_carry_small_bodies() -> None:
    assert parse_done_message(b'a {"x":1}\nb\nc {"y": "a b"}') == [
        ("a", b'{"x":1}'),
        ("b", None),
        ("c", b'{"y": "a b"}'),
    ]


def _register(queues: Queues, worker: str) -> None:
    queues.worker.heartbeat(worker, {"state": "ready"}, ttl_s=60)


def test_a_dead_workers_entries_are_reclaimed_by_a_live_one(queues: Queues) -> None:
    queues.submit("p", 8, chunk=4)
    _register(queues, "alive")
    entries = queues.worker.read("dead", 10, None)  # "dead" never registered a heartbeat
    queues.start(["p"], [entries[0].sid], worker="dead")
    assert len(queues.worker.reap("alive", crash_limit=3)) == 2
    pending = queues.client.xpending_range(queues.keys.queue, GROUP, "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"alive"}
    assert int(queues.client.hget(queues.keys.prediction("p"), "crashes:0")) == 1
    assert queues.client.hget(queues.keys.prediction("p"), "crashes:4") is None  # it was not running
    assert queues.get("p")["status"] == "running"


def test_reap_returns_the_entries_it_took(queues: Queues) -> None:
    queues.submit("p", 2)
    _register(queues, "alive")
    (entry,) = queues.worker.read("dead", 10, None)
    (taken,) = queues.worker.reap("alive", crash_limit=3)
    assert (taken.sid, taken.prediction_id, taken.data) == (entry.sid, "p", entry.data)
    queues.finish([_outputs(taken)], worker="alive")
    assert queues.get("p")["outputs"] == [{"y": 0}, {"y": 1}]


def test_a_live_workers_entries_stay_with_it(queues: Queues) -> None:
    queues.submit("p", 2)
    _register(queues, "busy")
    _register(queues, "other")
    queues.worker.read("busy", 10, None)
    assert queues.worker.reap("other", crash_limit=3) == []
    assert queues.client.xpending(queues.keys.queue, GROUP)["consumers"] == [{"name": b"busy", "pending": 1}]


def test_an_input_that_keeps_killing_workers_fails(queues: Queues) -> None:
    queues.submit("p", 1)
    queues.submit("q", 1)
    _register(queues, "alive")
    first = queues.worker.read("w0", 1, None)
    for attempt in range(3):
        worker = f"w{attempt}"
        entries = first if attempt == 0 else queues.worker.reap(worker, crash_limit=3)
        poison = [e for e in entries if e.prediction_id == "p"]
        queues.start(["p"], [poison[0].sid], worker=worker)
        # ... and the worker dies while running it; the next one takes over.
    queues.worker.reap("alive", crash_limit=3)
    failed = queues.get("p")
    assert failed["status"] == "failed"
    assert failed["error_message"] == "The worker running this input died 3 times; it is not retried again"
    assert queues.get("q")["status"] == "pending"  # the innocent entry is still queued
    assert queues.queued() == 1


def _late(entry: Entry, y: int) -> EntryResult:
    """What a worker that was paused past its heartbeat's expiry reports when it wakes up."""
    return EntryResult(entry, EntryResult.OUTPUTS, ",".join(json.dumps({"y": y}) for _ in range(entry.count)))


def _crashes(queues: Queues, prediction_id: str) -> dict[bytes, bytes]:
    fields = queues.client.hgetall(queues.keys.prediction(prediction_id))
    return {k: v for k, v in fields.items() if k.startswith((b"crashes:", b"suspect:"))}


def test_a_worker_presumed_dead_cannot_overwrite_its_successor(queues: Queues) -> None:
    queues.submit("p", 1)
    queues.submit("q", 8, chunk=4)
    _register(queues, "successor")
    first = queues.worker.read("paused", 10, None)
    queues.start(["p", "q"], [e.sid for e in first], worker="paused")  # ... and then it stalls
    taken = queues.worker.reap("successor", crash_limit=3)  # its heartbeat expired
    assert {e.sid for e in taken} == {e.sid for e in first}
    assert _crashes(queues, "p")[b"crashes:0"] == b"1"
    # The paused worker wakes up before its successor is done: its results are refused ...
    report = queues.worker.write("paused", [], [_late(first[0], 999), _late(first[1], 999)])
    assert report.rejected == {first[0].sid, first[1].sid} and report.ended == []
    assert queues.get("p")["status"] == "running" and queues.get("q")["status"] == "running"
    # ... and its report withdraws the crash: it was a pause, not a death.
    assert _crashes(queues, "p") == {b"crashes:0": b"0"}
    assert queues.finish([_outputs(e) for e in taken], worker="successor") == [("p", "success"), ("q", "success")]
    assert queues.get("p")["outputs"] == [{"y": 0}]
    assert queues.get("q")["outputs"] == [{"y": i} for i in range(8)]
    # Once the successor is done, a late result changes nothing either.
    assert queues.worker.write("paused", [], [_late(first[2], 999)]).rejected == {first[2].sid}
    assert queues.get("q")["outputs"] == [{"y": i} for i in range(8)]
    assert queues.queued() == 0
    assert queues.client.xpending(queues.keys.queue, GROUP)["pending"] == 0


def test_a_pause_alone_never_fails_a_prediction(queues: Queues) -> None:
    queues.submit("p", 1)
    (entry,) = queues.worker.read("w0", 10, None)
    owner = "w0"
    for attempt in range(1, 6):  # more pauses than the crash limit
        queues.start(["p"], [entry.sid], worker=owner)
        _register(queues, f"w{attempt}")
        queues.client.delete(queues.keys.worker(owner))  # the owner stalled past its heartbeat's TTL
        (entry,) = queues.worker.reap(f"w{attempt}", crash_limit=3)
        assert queues.worker.write(owner, [], [_late(entry, -1)]).rejected == {entry.sid}  # ... and woke up
        owner = f"w{attempt}"
    assert queues.get("p")["status"] == "running"
    assert queues.finish([_outputs(entry)], worker=owner) == [("p", "success")]
    assert queues.get("p")["outputs"] == [{"y": 0}]


def test_a_batch_whose_entries_were_taken_over_does_not_start(queues: Queues) -> None:
    queues.submit("p", 1)
    queues.submit("q", 1)
    _register(queues, "successor")
    p_entry, q_entry = queues.worker.read("paused", 10, None)
    assert len(queues.worker.reap("successor", crash_limit=3)) == 2
    queues.finish([_outputs(q_entry)], worker="successor")  # it ran q meanwhile
    batch = BatchStart(["p", "q"], [p_entry.sid, q_entry.sid], [True, True])
    report = queues.worker.write("paused", [batch], [])
    assert report.lost == [{p_entry.sid, q_entry.sid}]
    assert not queues.client.exists(queues.keys.running("paused"))
    assert queues.get("p")["status"] == "pending"  # not marked running by a worker that does not own it
    assert queues.worker.requeue("paused", [p_entry]) == 0  # nor handed back: it is the successor's


def test_files_of_rejected_and_failed_results_are_deleted(queues: Queues) -> None:
    queues.submit("p", 1)
    queues.submit("q", 8, chunk=4)
    _register(queues, "successor")
    entries = queues.worker.read("paused", 10, None)
    queues.worker.reap("successor", crash_limit=3)
    late = StoredFile("l" * 32 + ".png", "image/png", b"late")
    queues.worker.write("paused", [], [EntryResult(entries[0], EntryResult.OUTPUTS, '{"y": 0}', (late,))])
    assert not queues.client.exists(queues.keys.file(late.name))  # nobody links to it
    kept = StoredFile("k" * 32 + ".png", "image/png", b"kept")
    first = EntryResult(entries[1], EntryResult.OUTPUTS, ",".join(['{"y": 0}'] * 4), (kept,))
    queues.finish([first], worker="successor")
    assert queues.finish([first], worker="successor") == []  # a retry of a write that went through ...
    assert queues.client.exists(queues.keys.file(kept.name))  # ... keeps the files it recorded
    queues.finish([EntryResult(entries[2], EntryResult.ERROR, "ValueError: no")], worker="successor")
    assert queues.get("q")["status"] == "failed"
    assert not queues.client.exists(queues.keys.file(kept.name))  # its prediction failed: nobody may fetch it


def test_the_workers_index_holds_only_live_workers(queues: Queues) -> None:
    _register(queues, "alive")
    _register(queues, "gone")
    queues.worker.add_metrics("alive", 1, {"batches": 1})
    queues.worker.add_metrics("gone", 1, {"batches": 1})
    queues.client.delete(queues.keys.worker("gone"))  # its heartbeat expired
    assert queues.worker.forget_dead_workers() == 1
    assert queues.client.zrange(queues.keys.workers, 0, -1) == [b"alive"]
    assert queues.client.hkeys(queues.keys.metrics_applied) == [b"alive"]


def test_entries_of_ended_predictions_are_just_released(queues: Queues) -> None:
    queues.submit("p", 2)
    _register(queues, "alive")
    queues.worker.read("dead", 10, None)
    queues.cancel("p")
    assert queues.worker.reap("alive", crash_limit=3) == []
    assert queues.client.xpending(queues.keys.queue, GROUP)["pending"] == 0
    assert queues.queued() == 0


def test_entries_a_live_worker_forgot_are_claimed_again(queues: Queues) -> None:
    queues.submit("held", 1)
    queues.submit("lost", 1)
    held, lost = queues.worker.read("w1", 10, None)
    (again,) = queues.worker.reclaim_forgotten("w1", 0, {held.sid})
    assert (again.sid, again.data, again.redelivered) == (lost.sid, lost.data, True)
    assert queues.worker.reclaim_forgotten("w1", 60_000, set()) == []  # claiming reset its idle time


def test_output_files_are_stored_and_served_only_while_their_prediction_succeeded(queues: Queues) -> None:
    queues.submit("p", 1)
    (entry,) = queues.read()
    stored = StoredFile("n" * 32 + ".png", "image/png", b"\x89PNG...")
    assert queues._api("fetch_file", stored.name) is None
    queues.start(["p"])
    queues.finish([EntryResult(entry, EntryResult.OUTPUTS, '{"y": 0}', (stored,))])
    assert queues._api("fetch_file", stored.name) == ("image/png", b"\x89PNG...", None)
    ttl = queues.client.pttl(queues.keys.file(stored.name))
    assert 55_000 < ttl <= 60_000  # lives as long as its prediction's result (60 s), no longer
    queues.client.delete(queues.keys.prediction("p"))  # the prediction expired
    assert queues._api("fetch_file", stored.name) is None


def test_output_files_redis_refuses_fail_their_prediction(queues: Queues) -> None:
    queues.submit("p", 1)
    (entry,) = queues.read()
    stored = StoredFile("m" * 32 + ".bin", "application/octet-stream", b"data")
    queues.client.set(queues.keys.file(stored.name), "in the way")  # HSET on it answers WRONGTYPE
    queues.start(["p"])
    queues.finish([EntryResult(entry, EntryResult.OUTPUTS, '{"y": 0}', (stored,))])
    result = queues.get("p")
    assert result["status"] == "failed"
    assert result["error_message"].startswith("OutputFilesNotStored: Redis refused the output files: WRONGTYPE")
    assert queues.queued() == 0


def test_whole_predictions_start_with_one_check(queues: Queues) -> None:
    queues.submit("a", 1)
    queues.submit("b", 1)
    queues.read()
    queues.cancel("b")
    assert queues.start(["a", "b"], whole=True) == {"b"}
    assert queues.get("a")["status"] == "running"
    canceled = queues.get("b")
    assert canceled["error_message"] == "Canceled" and canceled["started_at"] is None


def test_a_batch_finished_before_its_start_was_announced_still_reports_its_start(queues: Queues) -> None:
    queues.submit("p", 8, chunk=4)
    first, second = queues.read()
    results = [
        EntryResult(e, EntryResult.OUTPUTS, _outputs(e).payload, started="2026-01-01T00:00:00.000000Z")
        for e in (first, second)
    ]
    queues.finish(results)  # no start was written
    done = queues.get("p")
    assert done["status"] == "success" and done["started_at"] == "2026-01-01T00:00:00.000000Z"


# ---------------------------------------------------------------------------------
# Metrics and webhook events recorded by the scripts


def _metrics(queues: Queues) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in queues.client.hgetall(queues.keys.metrics).items()}


def _count(metrics: dict[str, float], histogram: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(f"{histogram}:le:"))


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_finish_reports_the_predictions_it_ended_and_cancel_counts_itself(queues: Queues) -> None:
    queues.submit("ok", 2)
    queues.submit("bad", 1)
    queues.submit("gone", 1)
    ok, bad, _gone = queues.read()
    queues.start(["ok", "bad"])
    # Workers count what they end (with their heartbeats); the write tells them what that was.
    assert queues.finish([_outputs(ok), EntryResult(bad, EntryResult.ERROR, "ValueError: no")]) == [
        ("ok", "success"),
        ("bad", "failed"),
    ]
    queues.cancel("gone")
    metrics = _metrics(queues)
    assert metrics["predictions:canceled"] == 1
    assert _count(metrics, "prediction_seconds") == 1
    # Timed on Redis's clock, from the stream entries' ids: as the reported timestamps say, give or take.
    gone = queues.get("gone")
    expected = _seconds(gone["completed_at"]) - _seconds(gone["created_at"])
    assert metrics["prediction_seconds:sum"] == pytest.approx(expected, abs=0.05)


def test_webhook_events_are_queued_as_they_happen(queues: Queues) -> None:
    chunks = split_into_chunks(['{"x": 1}'], ["g"], 4)
    queues._api("submit", "hooked", chunks, 1, "https://hooks.example.com/x", ["start", "completed"])
    queues._api("submit", "ends-only", chunks, 1, "https://hooks.example.com/y", ["completed"])
    queues.submit("plain", 1)
    fields = queues.client.hgetall(queues.keys.prediction("hooked"))
    assert fields[b"webhook"] == b"https://hooks.example.com/x" and fields[b"webhook_events"] == b"start completed"
    entries = queues.read()
    assert [e.webhook_events for e in entries] == ["start completed", "completed", ""]
    start = BatchStart(["hooked", "ends-only", "plain"], [e.sid for e in entries], [True] * 3, [True, False, False])
    queues.worker.write("w1", [start], [])
    assert queues.client.lrange(queues.keys.webhooks, 0, -1) == [b"hooked start"]
    queues.finish([_outputs(e) for e in entries])
    assert queues.client.lrange(queues.keys.webhooks, 0, -1) == [
        b"hooked start",
        b"hooked completed",
        b"ends-only completed",
    ]


def test_a_canceled_prediction_announces_its_completion(queues: Queues) -> None:
    chunks = split_into_chunks(['{"x": 1}'], ["g"], 4)
    queues._api("submit", "p", chunks, 1, "https://hooks.example.com/x", ["completed"])
    queues.cancel("p")
    queues.cancel("p")  # changes nothing, announces nothing
    assert queues.client.lrange(queues.keys.webhooks, 0, -1) == [b"p completed"]


def test_a_refused_prediction_leaves_no_webhook_behind(redis_url: str, namespace: str) -> None:
    queues = Queues(redis_url, namespace, limit=1)
    chunks = split_into_chunks(['{"x": 1}', '{"x": 2}'], ["g", "g"], 4)
    with pytest.raises(QueueFull):
        queues._api("submit", "p", chunks, 2, "https://hooks.example.com/x", ["completed"])
    assert not queues.client.exists(queues.keys.prediction("p"))
    queues.client.close()


def test_the_webhook_queue_hands_out_each_event_and_survives_a_dead_dispatcher(queues: Queues) -> None:
    from tungstenkit._queue import WebhookQueue

    chunks = split_into_chunks(['{"x": 1}'], ["g"], 4)
    queues._api("submit", "p", chunks, 1, "https://hooks.example.com/x", ["start", "completed"])
    (entry,) = queues.read()
    queues.worker.write("w1", [BatchStart(["p"], [entry.sid], [True], [True])], [])
    queues.finish([_outputs(entry)])
    webhooks = WebhookQueue(queues.client, queues.keys)
    assert webhooks.hold_lock("a", 5000) and webhooks.hold_lock("a", 5000)
    assert not webhooks.hold_lock("b", 5000)
    assert webhooks.take(0.1) == "p start"
    # The dispatcher "a" dies here; "b" takes over and finds the event it held.
    webhooks.release_lock("a")
    assert webhooks.hold_lock("b", 5000)
    assert webhooks.dispatching() == ["p start"]
    event = webhooks.event("p start")
    assert event is not None and event.url == "https://hooks.example.com/x" and event.event == "start"
    started = json.loads(event.body)  # as it was when it started, though it has ended since
    assert started["status"] == "running" and started["outputs"] is None and started["completed_at"] is None
    assert started["started_at"] is not None
    ended = webhooks.event("p completed")
    assert ended is not None and json.loads(ended.body)["status"] == "success"
    webhooks.dispatched("p start")
    assert webhooks.take(0.1) == "p completed"
    webhooks.dispatched("p completed")
    assert webhooks.take(0.1) is None and webhooks.dispatching() == []
    queues.client.delete(queues.keys.prediction("p"))
    assert webhooks.event("p completed") is None  # expired meanwhile
    assert webhooks.secret() == webhooks.secret() and len(webhooks.secret()) == 64


def test_the_webhook_lock_is_released_only_by_its_holder_in_one_atomic_step(queues: Queues) -> None:
    from tungstenkit._queue import WebhookQueue

    webhooks = WebhookQueue(queues.client, queues.keys)
    assert webhooks.hold_lock("a", 5000)
    queues.client.delete(queues.keys.webhooks_lock)  # "a"'s lock expired ...
    assert webhooks.hold_lock("b", 5000)  # ... and "b" took it
    with queues.client.monitor() as monitor:
        webhooks.release_lock("a")  # "a" wakes up and lets go of what it thinks it holds
        queues.client.ping()
        commands = []
        for command in monitor.listen():
            name = command["command"].split()[0].upper()
            if name == "PING":
                break
            if command.get("client_type") != "lua" and name not in ("HELLO", "AUTH", "CLIENT", "SELECT", "SCRIPT"):
                commands.append(name)  # sent by the client (not run inside a script, not loading one)
    # One script that compares the holder and deletes: nothing can come between the two.
    assert set(commands) == {"EVALSHA"}
    assert queues.client.get(queues.keys.webhooks_lock) == b"b"


def test_heartbeat_metrics_add_up_and_the_snapshot_reads_them(queues: Queues) -> None:
    from tungstenkit._queue import read_snapshot

    queues.worker.heartbeat("w1", {"state": "ready"}, 5)
    assert queues.worker.add_metrics("w1", 1, {"batches": 2, "inputs:success": 7, "model_seconds:sum": 0.25})
    queues.worker.heartbeat("w1", {"state": "busy"}, 5)
    assert queues.worker.add_metrics("w1", 2, {"batches": 1, "model_seconds:sum": 0.5})
    # Sent again because its reply was lost (Redis restarted, say): counted once.
    assert not queues.worker.add_metrics("w1", 2, {"batches": 1, "model_seconds:sum": 0.5})
    assert queues.worker.add_metrics("w2", 1, {"inputs:failed": 1})
    queues.submit("p", 3)
    snapshot = read_snapshot(queues.client, queues.keys)
    assert snapshot.metrics["batches"] == 3 and snapshot.metrics["inputs:success"] == 7
    assert snapshot.metrics["model_seconds:sum"] == pytest.approx(0.75)
    assert snapshot.metrics["inputs:failed"] == 1
    assert snapshot.queued_inputs == 3
    assert [(w.worker_id, w.fields["state"]) for w in snapshot.workers] == [("w1", "busy")]
    assert queues._api("snapshot") == snapshot


def test_namespaces_are_found_by_their_queue(queues: Queues) -> None:
    from tungstenkit._queue import find_namespaces

    assert queues.keys.namespace in find_namespaces(queues.client)


def test_an_entry_that_missed_its_deadline_fails_its_prediction_unless_it_started(queues: Queues) -> None:
    chunks = split_into_chunks([json.dumps({"x": i}) for i in range(8)], ["g"] * 8, 4)
    queues._api("submit", "started", chunks, 8, "", (), None, "", 0, 60_000)
    queues._api("submit", "waiting", chunks[:1], 4, "", (), None, "", 0, 60_000)
    first, second, alone = queues.read()
    assert first.deadline_ms and first.deadline_ms == second.deadline_ms
    # One entry of "started" runs: the other missing the deadline must not fail it, but
    # goes back to the stream without its deadline.
    queues.start(["started"], [first.sid])
    assert queues.finish([EntryResult(second, EntryResult.EXPIRED, "Deadline exceeded")]) == []
    assert queues.get("started")["status"] == "running"
    (again,) = queues.read()
    assert (again.prediction_id, again.start, again.deadline_ms) == ("started", 4, 0)
    queues.finish([_outputs(first), _outputs(again)])
    assert queues.get("started")["outputs"] == [{"y": i} for i in range(8)]
    # "waiting" never started: it fails, its inputs leave the queue bound.
    assert queues.finish([EntryResult(alone, EntryResult.EXPIRED, "Deadline exceeded")]) == [("waiting", "failed")]
    ended = queues.get("waiting")
    assert ended["status"] == "failed" and ended["error_message"] == "Deadline exceeded"
    assert queues.queued() == 0 and queues.client.xlen(queues.keys.queue) == 0


def test_events_are_stored_in_order_and_refused_once_the_prediction_ended(queues: Queues) -> None:
    from tungstenkit._queue import PredictionEvents

    queues.submit("p", 1)
    (entry,) = queues.read()
    said = PredictionEvents(
        "p",
        [("output", '[{"index":0,"output":{"y":1}}]'), ("progress", '{"step":1}')],
        progress='{"step":1,"total":2,"message":""}',
        logs="line 1\n",
    )
    queues.worker.write("w1", [], [], [said])
    stream = queues.keys.events("p")
    stored = queues.client.xrange(stream)
    assert [fields[b"e"] for _, fields in stored] == [b"output", b"progress"]
    assert 0 < queues.client.ttl(stream) <= 60  # it expires with the prediction
    body = queues.get("p")
    assert body["status"] == "running" and body["progress"]["step"] == 1 and body["logs"] == "line 1\n"
    # Whole-entry results of a prediction with events are rendered where its logs are.
    queues.finish([_outputs(entry)])
    ended = queues.get("p")
    assert ended["status"] == "success" and ended["logs"] == "line 1\n" and ended["progress"]["total"] == 2
    queues.worker.write("w1", [], [], [PredictionEvents("p", [("log", '{"text":"late"}')], logs="late\n")])
    assert len(queues.client.xrange(stream)) == 2 and queues.get("p")["logs"] == "line 1\n"


def test_logs_keep_their_last_bytes_behind_a_marker_and_never_split_a_character(redis_url: str, namespace: str) -> None:
    from tungstenkit._queue import PredictionEvents

    queues = Queues(redis_url, namespace)
    queues.worker = WorkerQueue(queues.client, queues.keys, result_ttl_s=60, max_log_bytes=1024)
    queues.submit("p", 1)
    for i in range(40):
        queues.worker.write("w1", [], [], [PredictionEvents("p", logs=f"line {i} é✓\n" * 3)])
    logs = queues.get("p")["logs"]
    assert logs.startswith("[earlier logs dropped]\n") and logs.endswith("line 39 é✓\n")
    assert len(logs.encode()) <= 1024
    queues.client.close()
