"""The worker's Redis traffic, kept off the model thread.

A reader thread keeps the buffer topped up, a writer thread sends batch starts and
results in one pipelined round trip, a listener thread hears which predictions ended
elsewhere, and a heartbeat thread keeps the worker visible. While the model runs a
batch, the previous batch's results are written and the next inputs are read.

Each is a ``SupervisedThread``: Redis being away or refusing for a while
(``is_transient``) is retried with backoff; anything else ends the thread, and its
failure handler stops the worker (non-zero exit) so that a fresh one replaces it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from tungstenkit._backoff import Backoff
from tungstenkit._measurements import MetricDeltas
from tungstenkit._queue import (
    REDIS_ERRORS,
    BatchStart,
    Entry,
    EntryResult,
    OutputFilesRefused,
    PredictionEvents,
    WaitStarted,
    WorkerQueue,
    WriteReport,
    is_transient,
)
from tungstenkit._supervised_thread import FailureHandler, SupervisedThread
from tungstenkit.worker.batch_events import LOG, OUTPUT, PROGRESS, Said
from tungstenkit.worker.input_outcome import InputOutcome

logger = logging.getLogger(__name__)

#: How long after a batch began its start is announced (see ``Writer.started``).
START_DELAY_S = 0.002
#: What the model says (partial outputs, progress, logs) is written at most this often:
#: at once after a quiet spell (a step's events go out without waiting), and within a
#: burst every this many seconds, so many yields and prints share one round trip.
EVENTS_INTERVAL_S = 0.01
#: What stands where earlier logs were dropped (as ``lua/events.lua`` writes it).
LOGS_DROPPED = "[earlier logs dropped]\n"
#: How long after a batch ended its results are written when the next batch is waiting.
ENDED_DELAY_S = 0.001
#: How long the reader lets the model thread go first after it took a batch.
ROOM_DELAY_S = 0.001
#: The stop listener pings Redis this often when nothing arrives, and reconnects when
#: it has heard nothing at all (not even a pong) for ``LISTENER_SILENCE_S``: a
#: connection can die without an error (a network partition, a frozen proxy).
LISTENER_PING_S = 2.0
LISTENER_SILENCE_S = 3 * LISTENER_PING_S


#: Told what the writer just wrote (the results and the batch starts sent) and what the
#: write found; called on the writer thread after each successful write (the worker
#: counts its metrics there, see ``tungstenkit.worker.accounting.count_written``).
WrittenHandler = Callable[[Sequence[EntryResult], Sequence[BatchStart], WriteReport], None]


def _missing_stream(exc: BaseException) -> bool:
    """Redis lost the stream or its group (it restarted without persistence)."""
    return isinstance(exc, redis.ResponseError) and ("NOGROUP" in str(exc) or "no such key" in str(exc))


@dataclass
class _Pending:
    #: Batches begun; what to announce may still be a function (made off the model thread).
    started: list[tuple[int, Any]] = field(default_factory=list)
    results: list[EntryResult] = field(default_factory=list)
    #: Batches that ended, whose results are still to be worked out (on this thread).
    ended: list[Callable[[], list[EntryResult]]] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)
    #: What the model said, in order; written before any result.
    said: list[Said] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.started or self.results or self.ended or self.said)

    def starts_to_send(self) -> list[tuple[int, BatchStart]]:
        """A batch that already finished need not be announced as started: nobody could
        have seen it running, and its results end its predictions in the same call
        (unless a webhook asked to hear of the start)."""
        return [
            (batch_id, start) for batch_id, start in self.started if batch_id not in self.finished or any(start.hooked)
        ]


class Writer(SupervisedThread):
    """Sends batch starts and entry results, batching whatever piled up into one round trip.

    Nothing is lost while Redis is away or refuses writes (out of memory, a failover):
    pending writes are kept and retried, and ``failing`` tells the worker to stop
    reading more work meanwhile.
    """

    def __init__(
        self,
        queue: WorkerQueue,
        worker_id: str,
        on_ended: Callable[[int, set[str]], None],
        serialize: Callable[[Any], InputOutcome] | None = None,
        on_lost: Callable[[int, set[str]], None] | None = None,
        on_failure: FailureHandler | None = None,
        on_written: WrittenHandler | None = None,
    ) -> None:
        super().__init__("tungsten-writer", on_failure)
        self._on_written = on_written
        self._queue = queue
        self._worker_id = worker_id
        self._serialize = serialize
        self._on_ended = on_ended
        self._on_lost = on_lost
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._in_flight: list[EntryResult] = []
        self._busy = False
        self._halt = threading.Event()
        self._never = threading.Event()
        self._due_at = 0.0
        self._scheduled = False
        #: When what the model said was last taken to be written (monotonic).
        self._said_at = 0.0
        #: The last write failed and is being retried.
        self.failing = False

    def started(self, batch_id: int, start: BatchStart | Callable[[], BatchStart]) -> None:
        """A batch began. It is announced a moment later rather than at once: waking
        this thread now would take the GIL from the model thread just as it calls
        ``predict``, and a batch that ends within the delay needs no announcement."""
        with self._cond:
            self._pending.started.append((batch_id, start))
            self._due_within(START_DELAY_S)

    def finished(self, batch_id: int) -> None:
        """Every result of the batch has been handed over."""
        with self._cond:
            self._pending.finished.add(batch_id)

    def batch_ended(self, batch_id: int, results: Callable[[], list[EntryResult]], next_waiting: bool) -> None:
        """A batch ended; ``results()`` works out what its entries became. Called here,
        off the model thread, so the model starts its next batch sooner; and, when the
        next batch is already waiting, a moment later, so that this work runs while the
        model does rather than competing with it for the GIL."""
        with self._cond:
            self._pending.ended.append(results)
            self._pending.finished.add(batch_id)
            self._due_within(ENDED_DELAY_S if next_waiting else 0.0)

    def _due_within(self, delay_s: float) -> None:
        """Make the pending work due in ``delay_s`` at the latest (lock held)."""
        due = time.monotonic() + delay_s
        if due < self._due_at or not self._scheduled:
            self._due_at = due
            self._scheduled = True
            self._cond.notify()

    def events(self, said: list[Said]) -> None:
        """What the model said during a batch (called on the model thread: no work here)."""
        with self._cond:
            self._pending.said.extend(said)
            self._due_within(max(0.0, self._said_at + EVENTS_INTERVAL_S - time.monotonic()))

    def results(self, results: Sequence[EntryResult]) -> None:
        if not results:
            return
        with self._cond:
            self._pending.results.extend(results)
            self._cond.notify()

    def _finish_serializing(self, result: EntryResult) -> EntryResult:
        """Serialise the output objects the model thread left for this thread."""
        if not result.outputs or self._serialize is None:
            return result
        try:
            outcomes = [o if isinstance(o, str) else self._serialize(o) for o in result.outputs]
        except Exception as exc:  # a bad output fails its prediction, not the worker
            logger.exception("Serialising outputs of prediction %s failed", result.entry.prediction_id)
            return replace(result, kind=EntryResult.ERROR, payload=f"InvalidOutput: {exc}", outputs=())
        payload = ",".join(o if isinstance(o, str) else (o.output or "") for o in outcomes)
        files = tuple(result.files) + tuple(f for o in outcomes if not isinstance(o, str) for f in o.files)
        return replace(result, payload=payload, files=files, outputs=())

    def _due(self) -> bool:
        """Whether there is something to send now (called with the lock held)."""
        pending = self._pending
        return bool(pending.results) or (
            bool(pending.started or pending.ended or pending.said) and time.monotonic() >= self._due_at
        )

    def pending_sids(self) -> set[str]:
        """Entries whose results are handed over but not yet written (or being written)."""
        with self._cond:
            return {r.entry.sid for r in self._pending.results} | {r.entry.sid for r in self._in_flight}

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything handed over so far is written; False on timeout (or if
        this thread is not running, so nothing would be written)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def stop(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify_all()

    def loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._due() and not self._halt.is_set():
                    self._cond.wait(self._due_at - time.monotonic() if self._scheduled else None)
                if not self._pending and self._halt.is_set():
                    return
                work, self._pending = self._pending, _Pending()
                self._scheduled = False
                self._busy = True
                if work.said:
                    self._said_at = time.monotonic()
            work.started = [(batch_id, s() if callable(s) else s) for batch_id, s in work.started]
            for results_of_batch in work.ended:
                work.results.extend(results_of_batch())
            work.ended = []
            starts = work.starts_to_send()
            work.results = [self._finish_serializing(r) for r in work.results]
            events = self._serialize_events(work.said)
            with self._cond:
                self._in_flight = work.results
            try:
                report = self._queue.write(self._worker_id, [start for _, start in starts], work.results, events)
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, OutputFilesRefused)):
                    # Retrying would fail the same way: end the thread (and the worker).
                    raise
                self._put_back(work)
                if not self.failing:
                    logger.warning(
                        "Redis refused the results (%s: %s); keeping them and retrying", type(exc).__name__, exc
                    )
                self.failing = True
                # Keep retrying even while stopping: flush() decides how long to wait.
                backoff.wait(self._never)
                continue
            if self.failing:
                logger.info("Results written again after Redis refused them")
            self.failing = False
            backoff.reset()
            with self._cond:
                self._busy = False
                self._in_flight = []
                self._cond.notify_all()
            if report.rejected:
                logger.warning(
                    "%d results rejected: their inputs were taken over by another worker while this one was "
                    "unresponsive (the other worker's results stand)",
                    len(report.rejected),
                )
            if self._on_written is not None:
                self._on_written(work.results, [start for _, start in work.started], report)
            for (batch_id, _), gone in zip(starts, report.ended_before_start):
                if gone:
                    self._on_ended(batch_id, gone)
            for (batch_id, _), lost in zip(starts, report.lost):
                if lost and self._on_lost is not None:
                    self._on_lost(batch_id, lost)

    def _serialize_events(self, said: list[Said]) -> list[PredictionEvents]:
        """Per prediction, its events in order: one ``output`` event per yield, the
        progress reported last, and the text logged since the last write as one ``log``
        event (where it began)."""
        found: dict[str, PredictionEvents] = {}
        for item in said:
            events = found.get(item.prediction_id)
            if events is None:
                events = found[item.prediction_id] = PredictionEvents(item.prediction_id)
            if item.kind == OUTPUT:
                events.events.append((OUTPUT, self._outputs_json(item.payload)))
            elif item.kind == PROGRESS:
                events.events = [e for e in events.events if e[0] != PROGRESS]
                events.events.append((PROGRESS, item.payload))
                events.progress = item.payload
            else:
                if not events.logs:
                    events.events.append((LOG, ""))
                events.logs += item.payload
        limit = self._queue.max_log_bytes
        for events in found.values():
            if events.logs:
                if len(events.logs) > limit:
                    # No more than a prediction keeps: the rest would be dropped at once anyway.
                    events.logs = LOGS_DROPPED + events.logs[-(limit - len(LOGS_DROPPED)) :]
                text = json.dumps({"text": events.logs}, ensure_ascii=False)
                events.events = [(kind, text if kind == LOG else data) for kind, data in events.events]
        return list(found.values())

    def _outputs_json(self, pairs: list[tuple[int, Any]]) -> str:
        """``[{"index": i, "output": {...}}, ...]``; an output that cannot be serialised is left out (logged)."""
        parts = []
        for index, output in pairs:
            if not isinstance(output, str):
                try:
                    output = self._serialize(output).output if self._serialize is not None else None
                except Exception:  # a bad partial output must not stop the writer
                    logger.exception("Serialising a partial output failed; it is not sent")
                    continue
            if output:
                parts.append(f'{{"index":{index},"output":{output}}}')
        return "[" + ",".join(parts) + "]"

    def _put_back(self, work: _Pending) -> None:
        """Put unsent writes back in front of what arrived meanwhile, in their order."""
        with self._cond:
            work.started += self._pending.started
            work.results += self._pending.results
            work.ended += self._pending.ended
            work.finished |= self._pending.finished
            work.said += self._pending.said
            self._pending = work
            self._in_flight = []
            self._busy = False
            self._cond.notify_all()


class Heartbeat(SupervisedThread):
    """Keeps the worker's registry entry alive and current, and sends the metrics
    gathered since the last beat (one round trip a beat, whatever the batch rate)."""

    def __init__(
        self,
        queue: WorkerQueue,
        worker_id: str,
        fields: Callable[[], dict[str, str]],
        interval_s: float,
        metrics: MetricDeltas | None = None,
        ttl_s: float | None = None,
        on_failure: FailureHandler | None = None,
    ) -> None:
        super().__init__("tungsten-heartbeat", on_failure)
        self._queue = queue
        self._worker_id = worker_id
        self._fields = fields
        self._interval = interval_s
        self._ttl = ttl_s if ttl_s is not None else interval_s * 5
        self._metrics = metrics
        #: The metrics report sent last and not acknowledged: (its number, its deltas).
        self._unsent: tuple[int, dict[str, float]] | None = None
        self._sequence = 0
        self._halt = threading.Event()
        self._soon = threading.Event()
        #: When a beat last reached Redis (monotonic), under ``_beaten``'s lock; the reader
        #: waits on it (see ``current``).
        self._beaten_at = float("-inf")
        self._beaten = threading.Condition()
        #: A beat older than this may no longer stand in Redis by the time a read's
        #: entries are run: half the TTL, but never less than 1.5 intervals.
        self._fresh_s = max(self._ttl / 2, min(self._ttl - 0.25, 1.5 * interval_s))

    def current(self, timeout_s: float) -> bool:
        """Whether Redis holds this worker's heartbeat as current; if the last beat is
        not fresh (Redis was away, the process was stopped), beat now and wait up to
        ``timeout_s`` for it. The reader asks before each read: entries read while the
        heartbeat lapsed would be taken over as a dead worker's and run twice."""

        def fresh() -> bool:
            return time.monotonic() - self._beaten_at < self._fresh_s

        with self._beaten:
            if fresh():
                return True
        self.wake()
        with self._beaten:
            return self._beaten.wait_for(fresh, timeout_s)

    def beat(self) -> None:
        """Refresh the registry entry, then send the metrics; raises the first failure
        (metrics that could not be sent are sent again, under the same number, so that a
        report whose reply was lost is not counted twice)."""
        failure: Exception | None = None
        sent_at = time.monotonic()
        try:
            self._queue.heartbeat(self._worker_id, self._fields(), ttl_s=self._ttl)
        except Exception as exc:  # noqa: BLE001 - raised below, once the metrics were tried too
            failure = exc
        else:
            with self._beaten:
                self._beaten_at = sent_at  # (the TTL runs from no earlier than this)
                self._beaten.notify_all()
        self.send_metrics()
        if failure is not None:
            raise failure

    def send_metrics(self) -> None:
        """Send the report not yet acknowledged, if any, else what was counted since."""
        if self._metrics is None:
            return
        if self._unsent is None:
            deltas = self._metrics.take()
            if not deltas:
                return
            self._sequence += 1
            self._unsent = (self._sequence, deltas)
        sequence, deltas = self._unsent
        self._queue.add_metrics(self._worker_id, sequence, deltas)
        self._unsent = None

    def wake(self) -> None:
        """Beat now rather than at the next interval (the worker's state changed)."""
        self._soon.set()

    def stop(self) -> None:
        self._halt.set()
        self._soon.set()

    def loop(self) -> None:
        failing = False
        while not self._halt.is_set():
            self._soon.wait(self._interval)
            self._soon.clear()
            if self._halt.is_set():
                return
            try:
                self.beat()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not failing:
                    logger.warning("Heartbeat failed (%s: %s); retrying every beat", type(exc).__name__, exc)
                failing = True
                continue
            if failing:
                logger.info("Heartbeat sent again")
            failing = False


class StopListener(SupervisedThread):
    """Hears the ids of predictions that ended elsewhere (canceled, failed), and, on
    ``waits`` (a channel and what to call), the waiting streams that started (so that
    read-ahead steps aside: see ``Reader.step_aside_for``), on one connection."""

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        on_stop: Callable[[set[str]], None],
        on_failure: FailureHandler | None = None,
        waits: tuple[str, Callable[[str], None]] | None = None,
    ) -> None:
        super().__init__("tungsten-listener", on_failure)
        self._client = client
        self._channel = channel
        self._on_stop = on_stop
        self._waits = waits
        self._halt = threading.Event()
        self.subscribed = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def loop(self) -> None:
        backoff = Backoff()
        while not self._halt.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel, *([self._waits[0]] if self._waits else []))
                self.subscribed.set()
                backoff.reset()
                self._listen(pubsub)
            except Exception as exc:
                if self._halt.is_set():
                    break
                self.subscribed.clear()
                if isinstance(exc, REDIS_ERRORS):
                    logger.warning("Lost the stop channel (%s: %s); resubscribing", type(exc).__name__, exc)
                else:
                    logger.exception("The stop listener failed; resubscribing")
                backoff.wait(self._halt)
            finally:
                pubsub.close()

    def _listen(self, pubsub: Any) -> None:
        heard_at = pinged_at = time.monotonic()
        while not self._halt.is_set():
            message = pubsub.get_message(timeout=0.5)
            now = time.monotonic()
            if message is not None:
                heard_at = now
                if message["type"] != "message":
                    pass
                elif self._waits is not None and message["channel"].decode() == self._waits[0]:
                    self._waits[1](message["data"].decode())
                else:
                    self._on_stop(set(message["data"].decode().split()))
            if now - heard_at > LISTENER_SILENCE_S:
                raise redis.ConnectionError(f"nothing heard for {now - heard_at:.0f}s")
            if now - pinged_at >= LISTENER_PING_S and now - heard_at >= LISTENER_PING_S:
                pubsub.ping()
                pinged_at = now


class Reader(SupervisedThread):
    """Keeps about one batch worth of inputs read ahead of the model.

    Reading more would starve other workers; reading less would leave the model
    waiting on Redis between batches.

    Read-ahead hides Redis's latency, but work of a higher priority (or another tenant)
    that starts waiting meanwhile would wait behind it for a batch more. So when such
    work is announced (``step_aside_for``), before reading again the reader has the
    worker hand back what it read ahead and must not run first (``step_aside``, see
    ``lua/step_aside.lua``): that work is admitted in its place and read next. Nothing
    is sent for it unless such work starts waiting while such entries are held.
    """

    def __init__(
        self,
        queue: WorkerQueue,
        consumer: str,
        wanted_inputs: Callable[[], int],
        on_entries: Callable[[list[Entry]], None],
        block_ms: int = 1000,
        on_failure: FailureHandler | None = None,
        heartbeat_current: Callable[[float], bool] | None = None,
        step_aside: Callable[[WaitStarted], None] | None = None,
    ) -> None:
        super().__init__("tungsten-reader", on_failure)
        self._heartbeat_current = heartbeat_current
        self._step_aside = step_aside
        #: Work announced as waiting and not yet stepped aside for, by waiting stream.
        self._waits: dict[str, WaitStarted] = {}
        self._waits_lock = threading.Lock()
        self._queue = queue
        self._consumer = consumer
        self._wanted_inputs = wanted_inputs
        self._on_entries = on_entries
        self._block_ms = block_ms
        self._halt = threading.Event()
        self._room = threading.Event()
        self._mean_entry_size = 1.0

    def stop(self) -> None:
        self._halt.set()
        self._room.set()

    def room_made(self) -> None:
        """The model took a batch: there may be room to read more."""
        self._room.set()

    def step_aside_for(self, started: WaitStarted) -> None:
        """Work started waiting (called on the listener thread): before reading more,
        hand back the read-ahead that must not run before it."""
        with self._waits_lock:
            self._waits[started.stream] = started
        self._room.set()

    def _stepping_aside(self) -> None:
        """Hand back the read-ahead that steps aside for the work announced since the last
        round. When Redis is away it does not: that read-ahead runs first, as it would have."""
        with self._waits_lock:
            waits, self._waits = list(self._waits.values()), {}
        if self._step_aside is None:
            return
        for started in waits:
            try:
                self._step_aside(started)
            except Exception as exc:
                if not (is_transient(exc) or _missing_stream(exc)):
                    raise
                logger.warning("Could not step aside for waiting work (%s: %s)", type(exc).__name__, exc)

    def loop(self) -> None:
        backoff = Backoff()
        while not self._halt.is_set():
            self._stepping_aside()
            wanted = self._wanted_inputs()
            if wanted <= 0:
                if self._room.wait(0.5) and not self._waits:
                    # Room was made as the model thread took a batch: let it reach
                    # ``predict`` before this thread competes with it for the GIL. (Work
                    # that started waiting is stepped aside for at once.)
                    self._halt.wait(ROOM_DELAY_S)
                self._room.clear()
                continue
            if self._heartbeat_current is not None and not self._heartbeat_current(1.0):
                continue  # presumed dead in Redis: what it read now would be run twice
            count = max(1, int(wanted / self._mean_entry_size))
            try:
                entries = self._read(count)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("Redis unreachable while reading (%s: %s); retrying", type(exc).__name__, exc)
                backoff.wait(self._halt)
                continue
            backoff.reset()
            if entries:
                size = sum(e.count for e in entries) / len(entries)
                self._mean_entry_size = 0.8 * self._mean_entry_size + 0.2 * size
                self._on_entries(entries)

    def _read(self, count: int) -> list[Entry]:
        try:
            return self._queue.read(self._consumer, count, self._block_ms)
        except redis.ResponseError as exc:
            if not _missing_stream(exc):
                raise
            # Redis lost the stream (restarted without persistence): recreate it.
            self._queue.ensure_group()
            return []


#: An entry pending for a live worker that it does not hold, idle this long, was lost
#: track of (a dropped result write) and is run again.
FORGOTTEN_IDLE_MS = 60_000
_FORGOTTEN_CHECK_EVERY = 15


#: The reaper drops dead workers from the workers index every this many rounds.
_PRUNE_EVERY = 10


class Reaper(SupervisedThread):
    """Takes over the entries of workers that died (their heartbeat is gone), recovers
    this worker's own entries that it lost track of, and keeps the workers index to the
    live workers."""

    def __init__(
        self,
        queue: WorkerQueue,
        worker_id: str,
        crash_limit: int,
        interval_s: float,
        on_entries: Callable[[list[Entry]], None],
        held_sids: Callable[[], set[str]],
        on_failure: FailureHandler | None = None,
    ) -> None:
        super().__init__("tungsten-reaper", on_failure)
        self._queue = queue
        self._worker_id = worker_id
        self._crash_limit = crash_limit
        self._interval = interval_s
        self._on_entries = on_entries
        self._held_sids = held_sids
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def loop(self) -> None:
        rounds = 0
        while not self._halt.wait(self._interval):
            rounds += 1
            try:
                self._round(rounds)
            except Exception as exc:
                if not (is_transient(exc) or _missing_stream(exc)):
                    raise
                logger.debug("Reaping skipped: %s", exc)

    def _round(self, rounds: int) -> None:
        if rounds % _FORGOTTEN_CHECK_EVERY == 0:
            entries = self._queue.reclaim_forgotten(self._worker_id, FORGOTTEN_IDLE_MS, self._held_sids())
            if entries:
                logger.warning("Running again %d entries whose results were never recorded", len(entries))
                self._on_entries(entries)
        if rounds % _PRUNE_EVERY == 0:
            self._queue.forget_dead_workers()
        entries = self._queue.reap(self._worker_id, self._crash_limit)
        if entries:
            inputs = sum(e.count for e in entries)
            logger.warning("Took over %d inputs from a worker that stopped answering", inputs)
            self._on_entries(entries)
