"""The worker's Redis threads against real Redis faults: each survives what Redis does
for a while (out of memory, a replica during failover, a long script, a silent
connection) and carries on once it is over; what it cannot handle ends the worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis

from tests.redisproxy import freezing_proxy
from tests.support import wait_for
from tungstenkit._measurements import MetricDeltas
from tungstenkit._queue import BatchStart, Entry, EntryResult, Keys, WaitStarted, WorkerQueue, split_into_chunks
from tungstenkit._queue._prediction_queue import Submission, submit_call
from tungstenkit._queue._scripts import script
from tungstenkit._redis_server import RedisServer, free_port
from tungstenkit._supervised_thread import SupervisedThread
from tungstenkit.worker.redis_threads import Heartbeat, Reader, StopListener, Writer


class Failures:
    """A failure handler that records which threads died (instead of ending the process)."""

    def __init__(self) -> None:
        self.died: list[str] = []

    def __call__(self, thread: SupervisedThread, exc: BaseException) -> None:
        self.died.append(f"{thread.name}: {type(exc).__name__}: {exc}")


@pytest.fixture
def client(private_redis: RedisServer) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(private_redis.url)
    yield found
    found.config_set("maxmemory", 0)
    found.close()


@pytest.fixture
def queue(client: redis.Redis, namespace: str) -> WorkerQueue:
    found = WorkerQueue(client, Keys(namespace), result_ttl_s=60)
    found.ensure_group()
    return found


def _submit(client: redis.Redis, keys: Keys, prediction_id: str, n: int = 1) -> None:
    """What the API's submit does, from a blocking client."""
    chunks = split_into_chunks([json.dumps({"x": i}) for i in range(n)], ["g"] * n, 4)
    keys_, args = submit_call(keys, [Submission(prediction_id, chunks, n, "", "")], limit=0, ttl_s=60)
    client.eval(script("submit").source, len(keys_), *keys_, *args)


def _status(queue: WorkerQueue, prediction_id: str) -> str:
    fetched = queue.fetch(prediction_id)
    return "" if fetched is None else json.loads(fetched.body)["status"]


def _busy_script(url: str, seconds: float) -> threading.Thread:
    """Runs a script that keeps Redis busy for ``seconds``: others get BUSY meanwhile."""
    source = (
        "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
        "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) return 1"
    )

    def run() -> None:
        busy = redis.Redis.from_url(url)
        busy.eval(source, 0, int(seconds * 1_000_000))
        busy.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for_a_refreshed_expiry(client: redis.Redis, key: str, what: str) -> None:
    """Wait until the heartbeat (TTL 1 s) sets the key's expiry again. The test sets it to a
    minute first, so only a later beat brings it under a second. (Comparing with a PTTL read
    once failed when that read came within the millisecond of a beat: 1000 is never
    exceeded.)"""
    client.pexpire(key, 60_000)
    wait_for(lambda: 0 < client.pttl(key) <= 1000, 5, what=what)


def test_the_heartbeat_outlives_oom_and_busy_and_keeps_the_worker_visible(
    client: redis.Redis, queue: WorkerQueue, private_redis: RedisServer
) -> None:
    failures = Failures()
    metrics = MetricDeltas()
    metrics.add("batches", 2)
    beat = Heartbeat(queue, "w1", lambda: {"state": "ready"}, 0.1, metrics, ttl_s=1.0, on_failure=failures)
    key = queue.keys.worker("w1")
    beat.start()
    try:
        wait_for(lambda: client.exists(key), 5, what="the first beat")
        client.config_set("maxmemory", 1)  # every write that adds memory is refused: OOM
        # The expiry is still refreshed (PEXPIRE needs no memory): the worker stays visible.
        _wait_for_a_refreshed_expiry(client, key, "a refreshed expiry while Redis is out of memory")
        client.config_set("maxmemory", 0)
        wait_for(lambda: client.hget(queue.keys.metrics, "batches") == b"2", 5, what="the metrics kept through OOM")
        client.config_set("busy-reply-threshold", 50)
        busy = _busy_script(private_redis.url, 1.5)
        busy.join(10)
        _wait_for_a_refreshed_expiry(client, key, "beats after the busy script")
        assert beat.is_alive() and failures.died == []
    finally:
        beat.stop()
        beat.join(5)


def test_the_reader_waits_out_a_failover_to_a_replica(client: redis.Redis, queue: WorkerQueue) -> None:
    failures = Failures()
    read: list[Entry] = []
    reader = Reader(queue, "w1", lambda: 10, read.extend, block_ms=200, on_failure=failures)
    reader.start()
    try:
        client.replicaof("127.0.0.1", free_port())  # nothing listens there: a replica cut off
        wait_for(lambda: client.info("replication")["role"] == "slave", 5)
        with pytest.raises(redis.ReadOnlyError):
            queue.read("probe", 1, None)  # what the reader gets meanwhile
        client.replicaof("no", "one")
        _submit(client, queue.keys, "p")
        wait_for(lambda: [e.prediction_id for e in read] == ["p"], 10, what="the reader to read again")
        assert reader.is_alive() and failures.died == []
    finally:
        client.replicaof("no", "one")
        reader.stop()
        reader.join(5)


def test_the_writer_keeps_results_redis_refuses_and_writes_them_later(client: redis.Redis, queue: WorkerQueue) -> None:
    failures = Failures()
    writer = Writer(queue, "w1", lambda batch_id, ended: None, on_failure=failures)
    _submit(client, queue.keys, "p")
    (entry,) = queue.read("w1", 10, None)
    writer.start()
    try:
        client.config_set("maxmemory", 1)
        writer.started(1, BatchStart(["p"], [entry.sid], [True]))
        writer.results([EntryResult(entry, EntryResult.OUTPUTS, '{"y": 1}')])
        wait_for(lambda: writer.failing, 5, what="the write to be refused")
        assert writer.pending_sids() == {entry.sid}  # kept, so never taken for forgotten and run again
        client.config_set("maxmemory", 0)
        wait_for(lambda: _status(queue, "p") == "success", 10, what="the kept result to be written")
        assert writer.flush(5) and not writer.failing
        assert json.loads(queue.fetch("p").body)["outputs"] == [{"y": 1}]  # type: ignore[union-attr]
        assert writer.is_alive() and failures.died == []
    finally:
        writer.stop()
        writer.join(5)


def test_a_writer_that_cannot_work_out_results_ends_the_worker(queue: WorkerQueue) -> None:
    failures = Failures()
    writer = Writer(queue, "w1", lambda batch_id, ended: None, on_failure=failures)
    writer.start()

    def broken() -> list[EntryResult]:
        raise RuntimeError("a bug")

    writer.batch_ended(1, broken, False)
    writer.join(5)
    assert not writer.is_alive()
    assert failures.died == ["tungsten-writer: RuntimeError: a bug"]


def test_the_stop_listener_replaces_a_connection_that_went_silent(
    private_redis: RedisServer, client: redis.Redis
) -> None:
    failures = Failures()
    heard: list[set[str]] = []
    assert private_redis.port is not None
    with freezing_proxy(private_redis.port) as proxy:
        through = redis.Redis.from_url(proxy.url(private_redis.password))
        listener = StopListener(through, "stop", heard.append, on_failure=failures)
        listener.start()
        try:
            wait_for(lambda: client.pubsub_numsub("stop")[0][1] == 1, 5, what="the subscription")
            proxy.freeze()  # the subscription's connection goes silent, with no error
            wait_for(
                lambda: proxy.connections >= 2 and client.pubsub_numsub("stop")[0][1] >= 1,
                30,
                what="a new subscription",
            )
            wait_for(lambda: client.publish("stop", "p1 p2") >= 1 and heard, 10, interval=0.2)
            assert heard[-1] == {"p1", "p2"} and listener.is_alive() and failures.died == []
        finally:
            listener.stop()
            listener.join(5)
            through.close()


def test_the_reader_drops_an_entry_it_cannot_read_and_reads_on(
    client: redis.Redis, queue: WorkerQueue, caplog: pytest.LogCaptureFixture
) -> None:
    failures = Failures()
    read: list[Entry] = []
    client.xadd(queue.keys.queue, {"p": "x", "unknown": "field"})  # written by hand, or by another version
    reader = Reader(queue, "w1", lambda: 10, read.extend, block_ms=200, on_failure=failures)
    reader.start()
    try:
        _submit(client, queue.keys, "p")
        wait_for(lambda: [e.prediction_id for e in read] == ["p"], 10, what="the good entry")
        assert "Dropped malformed queue entry" in caplog.text
        assert client.xlen(queue.keys.queue) == 1 and client.xpending(queue.keys.queue, "workers")["pending"] == 1
        assert reader.is_alive() and failures.died == []
    finally:
        reader.stop()
        reader.join(5)


def test_metrics_sent_again_after_a_lost_reply_count_once(client: redis.Redis, queue: WorkerQueue) -> None:
    metrics = MetricDeltas()
    beat = Heartbeat(queue, "w1", lambda: {"state": "ready"}, 60, metrics, ttl_s=120)
    metrics.add("batches", 3)
    client.config_set("maxmemory", 1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        beat.beat()  # refused: the report stays unsent ...
    client.config_set("maxmemory", 0)
    metrics.add("batches", 1)  # ... and more is counted meanwhile
    beat.beat()
    beat.beat()
    assert client.hget(queue.keys.metrics, "batches") == b"4"
    # A report applied although its reply never came back is not applied again.
    metrics.add("batches", 2)
    beat.send_metrics()
    beat._unsent = (beat._sequence, {"batches": 2})  # as if that reply had been lost
    beat.send_metrics()
    assert client.hget(queue.keys.metrics, "batches") == b"6"


def test_the_reaper_takes_over_a_dead_workers_entries_even_one_it_cannot_read(
    client: redis.Redis, queue: WorkerQueue, caplog: pytest.LogCaptureFixture
) -> None:
    from tungstenkit.worker.redis_threads import Reaper

    failures = Failures()
    taken: list[Entry] = []
    _submit(client, queue.keys, "p")
    client.xadd(queue.keys.queue, {"p": "p", "unknown": "field"})  # written by another version
    client.xreadgroup("workers", "dead", {queue.keys.queue: ">"})  # "dead" read both, then died
    queue.heartbeat("alive", {"state": "ready"}, 60)
    reaper = Reaper(queue, "alive", 3, 0.1, taken.extend, set, on_failure=failures)
    reaper.start()
    try:
        wait_for(lambda: [e.prediction_id for e in taken] == ["p"], 10, what="the readable entry taken over")
        assert "Dropped malformed queue entry" in caplog.text
        assert reaper.is_alive() and failures.died == []
    finally:
        reaper.stop()
        reaper.join(5)


def test_waiting_work_heard_by_the_listener_is_stepped_aside_for_by_an_idle_reader(
    client: redis.Redis, queue: WorkerQueue
) -> None:
    failures = Failures()
    stepped: list[WaitStarted] = []
    stopped: list[set[str]] = []
    # Its read-ahead is full (it wants nothing): it steps aside without reading first.
    reader = Reader(queue, "w1", lambda: 0, lambda entries: None, on_failure=failures, step_aside=stepped.append)

    def on_wait(message: str) -> None:
        started = queue.wait_started(message)
        if started is not None:
            reader.step_aside_for(started)

    keys = queue.keys
    listener = StopListener(client, keys.stop_channel, stopped.append, failures, (keys.waits_channel, on_wait))
    reader.start()
    listener.start()
    try:
        wait_for(lambda: client.pubsub_numsub(keys.waits_channel)[0][1] == 1, 5, what="the subscription")
        client.publish(keys.waits_channel, "not a waiting stream")
        client.publish(keys.waits_channel, keys.wait_prefix + "high:B")
        client.publish(keys.stop_channel, "p1")
        wait_for(lambda: stepped and stopped, 5, what="both messages")
        assert [(s.priority, s.tenant) for s in stepped] == [("high", "B")] and stopped == [{"p1"}]
        assert failures.died == []
    finally:
        listener.stop()
        reader.stop()
        listener.join(5)
        reader.join(5)
