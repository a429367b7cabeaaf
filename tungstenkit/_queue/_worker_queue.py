"""The worker's side of the data model (blocking): read, start, finish, recover."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, FieldT

from tungstenkit._queue._keys import (
    ADMITTED_BATCHES_PER_WORKER,
    FORGET_IDLE_CONSUMER_MS,
    GROUP,
    PRIORITIES,
    RUNNING_KEY_TTL_S,
    Keys,
    is_transient,
    now_iso,
)
from tungstenkit._queue._records import (
    FILE_TTL_FACTOR,
    READ_FIELDS,
    WEBHOOK_EVENT_INTERVAL_MS,
    BatchStart,
    EntryResult,
    Fetched,
    PredictionEvents,
    read_prediction,
    render_body,
    sid_range,
)
from tungstenkit._queue._scripts import Script, script
from tungstenkit._queue._wire import FILE, Entry, ResultKind


@dataclass(frozen=True)
class WriteReport:
    """What a write found: per started batch, the predictions that had already ended
    (canceled, failed: they must not produce outputs) and the entries this worker no
    longer owns (another worker took them over); the predictions the results ended,
    with their outcome (success or failed); the entries whose results were
    rejected because this worker no longer owned them; and those whose results were
    discarded because their prediction had ended first (a cancel won the race)."""

    ended_before_start: list[set[str]]
    ended: list[tuple[str, str]]
    lost: list[set[str]] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    discarded: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class WaitStarted:
    """Work that started waiting for admission (announced on ``Keys.waits_channel``):
    the waiting stream, its priority and its tenant."""

    stream: str
    priority: str
    tenant: str

    def outranks(self, entry: Entry) -> bool:
        """Whether ``entry`` (read ahead, not started) steps aside for this work: it is of
        a lower priority, or of another tenant of the same priority, and it has not
        stepped aside before (so none is passed over more than once)."""
        if entry.stepped_aside or entry.priority not in PRIORITIES:
            return False
        mine, theirs = PRIORITIES.index(entry.priority), PRIORITIES.index(self.priority)
        return mine > theirs or (mine == theirs and entry.tenant != self.tenant)


class OutputFilesRefused(Exception):
    """Redis refused to store output files for now (out of memory, say): retry later."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"Redis refused the output files: {cause}")
        self.cause = cause


logger = logging.getLogger(__name__)

#: Ended bodies up to this size travel on the done channel, so waiting requests need
#: not read them back; larger ones (images, say) are read from the prediction's hash.
INLINE_BODY_BYTES = 32 * 1024
_SAID_LIMIT = 100_000


class WorkerQueue:
    """What a worker does with Redis: read entries, mark batches started, write results."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        result_ttl_s: int,
        max_events: int = 1000,
        max_log_bytes: int = 65536,
        batch_size: int = 32,
    ) -> None:
        self._redis = client
        self.keys = keys
        self._ttl = result_ttl_s
        self._max_events = max_events
        self._max_log_bytes = max_log_bytes
        #: Predictions this worker wrote events for: their bodies are rendered in Lua,
        #: where their progress and logs are (oldest forgotten past ``_SAID_LIMIT``).
        self._said: OrderedDict[str, None] = OrderedDict()
        #: Inputs per worker that the worker stream and the workers may hold before
        #: entries wait for admission.
        self._admitted_per_worker = ADMITTED_BATCHES_PER_WORKER * batch_size
        #: The last read found nothing (the next one admits first).
        self._found_none = True
        #: Redis's clock minus this machine's, in ms, as the last heartbeat measured it
        #: (deadlines are in Redis's clock: the API's and the workers' machines may differ).
        self.clock_offset_ms = 0.0

    def redis_now_ms(self) -> float:
        """Redis's clock now, in ms, from this machine's and the measured offset."""
        return time.time() * 1000 + self.clock_offset_ms

    def ensure_group(self) -> None:
        try:
            # From the stream's first entry, so inputs queued before any worker ran are read.
            self._redis.xgroup_create(self.keys.queue, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer; waits up to ``block_ms`` (None: not at all).

        After a read that found nothing (and at the first), entries waiting for
        admission are admitted first, in the same round trip: room for them is made when
        batches finish and when predictions are canceled, which admit themselves
        (``finish.lua``, ``cancel.lua``), so this catches what else makes room, such as
        this worker joining.
        """
        if not self._found_none:
            reply = self._redis.xreadgroup(GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms)
        else:
            admit = script("admit")
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(admit.sha, 2, self.keys.queue, self.keys.queued, self._admitted_per_worker)
                pipe.xreadgroup(GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms)
                admitted, reply = pipe.execute(raise_on_error=False)
            if isinstance(admitted, NoScriptError):
                self._redis.script_load(admit.source)  # Redis lost its scripts: admit at the next read
            elif isinstance(admitted, Exception):
                raise admitted
            if isinstance(reply, Exception):
                raise reply
        streams = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None", reply)
        items = [item for _stream, found in streams or () for item in found]
        self._found_none = not items
        return self._entries(items)

    def _entries(self, items: Sequence[tuple[bytes, dict[bytes, bytes]]], redelivered: bool = False) -> list[Entry]:
        """Stream items as entries. An entry this version cannot read (written by hand, or by
        another version) is removed with an error in the log, rather than failing whoever
        reads it, again and again."""
        entries: list[Entry] = []
        malformed: list[bytes] = []
        for sid, fields in items:
            if not fields:
                continue
            try:
                entries.append(Entry.decode(sid, fields, redelivered=redelivered))
            except (KeyError, ValueError) as exc:
                logger.error("Dropped malformed queue entry %s (%s: %s): %r", sid, type(exc).__name__, exc, fields)
                malformed.append(sid)
        if malformed:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.keys.queue, GROUP, *malformed)
                pipe.xdel(self.keys.queue, *malformed)
                pipe.execute()
        return entries

    def write(
        self,
        worker_id: str,
        started: Sequence[BatchStart],
        results: Sequence[EntryResult],
        events: Sequence[PredictionEvents] = (),
    ) -> WriteReport:
        """Mark batches started, record what the model said (``events``) and results, in
        one round trip (two with output files). Events come before results, so a
        prediction's events all precede its end.

        Only entries this worker still owns start or finish (the scripts fence them).
        Raises ``OutputFilesRefused`` when Redis will not take output files for now.
        """
        results = self._store_files(results)
        calls: list[tuple[Script, list[str], list[Any]]] = []
        stamp = now_iso()
        for batch in started:
            keys = [self.keys.running(worker_id), self.keys.webhooks, self.keys.queue]
            keys += [self.keys.prediction(p) for p in batch.prediction_ids]
            lo, hi = sid_range(batch.sids)
            args: list[Any] = [
                stamp,
                " ".join(batch.sids),
                RUNNING_KEY_TTL_S,
                GROUP,
                worker_id,
                lo,
                hi,
                self.keys.events_channel,
            ]
            calls.append((script("start"), keys, args + batch.flags()))
        if events:
            calls.append(self._events_call(stamp, events))
        if results:
            keys = [self.keys.queue, self.keys.queued, self.keys.webhooks]
            lo, hi = sid_range([r.entry.sid for r in results])
            args = [
                GROUP,
                worker_id,
                stamp,
                self._ttl,
                self.keys.done_channel,
                self.keys.stop_channel,
                INLINE_BODY_BYTES,
                lo,
                hi,
                self._admitted_per_worker,
            ]
            for result in results:
                entry = result.entry
                if entry.prediction_id in self._said:
                    kind, payload = result.kind, result.payload
                    if entry.whole:
                        del self._said[entry.prediction_id]
                else:
                    kind, payload = _as_body(result, stamp)
                keys.append(self.keys.prediction(entry.prediction_id))
                args += [
                    entry.prediction_id,
                    entry.sid,
                    kind,
                    entry.start,
                    entry.count,
                    payload,
                    result.started,
                    entry.webhook_events,
                    " ".join(self.keys.file(f.name) for f in result.files),
                    "1" if entry.has_tenant else "",
                ]
            calls.append((script("finish"), keys, args))
        replies = self._run_scripts(calls)
        if events:
            del replies[len(started)]
        ended_first = [{batch.prediction_ids[i - 1] for i in reply[0]} for batch, reply in zip(started, replies)]
        lost = [{sid.decode() for sid in reply[1]} for reply in replies[: len(started)]]
        outcomes, rejected, discarded = replies[len(started)] if results else ([], [], [])
        ended = [(outcomes[i].decode(), outcomes[i + 1].decode()) for i in range(0, len(outcomes), 2)]
        return WriteReport(
            ended_first, ended, lost, {sid.decode() for sid in rejected}, {sid.decode() for sid in discarded}
        )

    @property
    def max_log_bytes(self) -> int:
        """The most of a prediction's logs kept (``Settings.max_log_bytes``)."""
        return self._max_log_bytes

    def _events_call(self, stamp: str, events: Sequence[PredictionEvents]) -> tuple[Script, list[str], list[Any]]:
        keys = [self.keys.webhooks]
        args: list[Any] = [
            stamp,
            self._max_events,
            self._ttl,
            self._max_log_bytes,
            int(time.time() * 1000),
            WEBHOOK_EVENT_INTERVAL_MS,
            self.keys.events_channel,
        ]
        for said in events:
            self._said[said.prediction_id] = None
            keys += [self.keys.prediction(said.prediction_id), self.keys.events(said.prediction_id)]
            args += [said.prediction_id, len(said.events), said.progress, said.logs]
            for kind, data in said.events:
                args += [kind, data]
        while len(self._said) > _SAID_LIMIT:
            self._said.popitem(last=False)
        return script("events"), keys, args

    def reap(self, worker_id: str, crash_limit: int) -> list[Entry]:
        """Take over the entries of workers whose heartbeat expired; returns them.

        Entries a dead worker was running count a crash; past ``crash_limit`` their
        predictions fail instead of being redelivered.
        """
        consumers = self._redis.xinfo_consumers(self.keys.queue, GROUP)
        others = [c for c in consumers if c["name"].decode() != worker_id]
        if not others:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for consumer in others:
                pipe.exists(self.keys.worker(consumer["name"].decode()))
            alive = pipe.execute()
        claimed: list[Entry] = []
        for consumer, is_alive in zip(others, alive):
            name = consumer["name"].decode()
            if is_alive:
                continue
            if not consumer["pending"]:
                # Nothing to take over: its running key counts nothing any more.
                self._redis.delete(self.keys.running(name))
                if consumer["idle"] > FORGET_IDLE_CONSUMER_MS:
                    self._redis.xgroup_delconsumer(self.keys.queue, GROUP, name)
                continue
            reply = self._run_scripts(
                [
                    (
                        script("reclaim"),
                        [
                            self.keys.queue,
                            self.keys.queued,
                            self.keys.running(name),
                            self.keys.webhooks,
                            self.keys.metrics,
                        ],
                        [
                            GROUP,
                            worker_id,
                            name,
                            crash_limit,
                            2 * crash_limit + 1,
                            now_iso(),
                            self._ttl,
                            self.keys.done_channel,
                            self.keys.stop_channel,
                            self.keys.prediction_prefix,
                        ],
                    )
                ]
            )[0]
            items = [(item[0], dict(zip(item[1][::2], item[1][1::2]))) for item in reply if item and item[1]]
            claimed += self._entries(items, redelivered=True)
        return claimed

    def reclaim_forgotten(self, worker_id: str, min_idle_ms: int, held: set[str]) -> list[Entry]:
        """Entries pending for this worker, idle for long, that it no longer holds.

        They arise when a result write was lost (a Redis failover, a bug): claiming them
        again resets their idle time and hands them back to the worker to run.
        """
        pending = cast(
            "list[dict[str, Any]]",
            self._redis.xpending_range(
                self.keys.queue, GROUP, min="-", max="+", count=1000, consumername=worker_id, idle=min_idle_ms
            ),
        )
        forgotten: list[bytes] = [p["message_id"] for p in pending if p["message_id"].decode() not in held]
        if not forgotten:
            return []
        claimed = self._redis.xclaim(self.keys.queue, GROUP, worker_id, min_idle_ms, list(forgotten))
        return self._entries(cast("list[tuple[bytes, dict[bytes, bytes]]]", claimed), redelivered=True)

    def _store_files(self, results: Sequence[EntryResult]) -> list[EntryResult]:
        """Write output files before the results that link to them become visible.

        They expire after ``FILE_TTL_FACTOR`` times the result TTL unless the result
        that links to them is recorded (finish.lua then gives them the result's expiry,
        or deletes them). A result whose files Redis refuses for good (a wrong type in
        the way, say) becomes an error, so its prediction fails with the reason; a
        refusal for now (out of memory) raises ``OutputFilesRefused``, and the caller
        keeps the result and tries again.
        """
        with_files = [i for i, r in enumerate(results) if r.files and r.kind == EntryResult.OUTPUTS]
        if not with_files:
            return list(results)
        ttl_ms = self._ttl * FILE_TTL_FACTOR * 1000
        with self._redis.pipeline(transaction=False) as pipe:
            for i in with_files:
                for stored in results[i].files:
                    key = self.keys.file(stored.name)
                    fields: dict[FieldT, EncodableT] = {
                        FILE.prediction: results[i].entry.prediction_id,
                        FILE.media_type: stored.mime_type,
                        FILE.data: stored.data,
                    }
                    pipe.hset(key, mapping=fields)
                    pipe.pexpire(key, ttl_ms)
            replies = list(pipe.execute(raise_on_error=False))
        transient = next((r for r in replies if isinstance(r, Exception) and is_transient(r)), None)
        if transient is not None:
            raise OutputFilesRefused(transient)
        found = iter(replies)
        checked = list(results)
        for i in with_files:
            errors = [r for _ in range(2 * len(results[i].files)) if isinstance(r := next(found), Exception)]
            if errors:
                message = f"OutputFilesNotStored: Redis refused the output files: {errors[0]}"
                checked[i] = EntryResult(results[i].entry, EntryResult.ERROR, message)
        return checked

    def fetch(self, prediction_id: str) -> Fetched | None:
        """A prediction as the API would show it (for tools and tests)."""
        return read_prediction(
            cast("list[bytes | None]", self._redis.hmget(self.keys.prediction(prediction_id), READ_FIELDS))
        )

    def requeue(self, worker_id: str, entries: Sequence[Entry]) -> int:
        """Hand entries that were read but never started back to the stream (those this
        worker still owns)."""
        if not entries:
            return 0
        keys = [self.keys.queue] + [self.keys.prediction(e.prediction_id) for e in entries]
        sids = [e.sid for e in entries]
        args: list[Any] = [GROUP, worker_id, *sid_range(sids), *sids]
        return int(self._run_scripts([(script("requeue"), keys, args)])[0])

    def wait_started(self, message: str) -> WaitStarted | None:
        """What a message of ``Keys.waits_channel`` announces (None: not a waiting stream
        of this namespace)."""
        if not message.startswith(self.keys.wait_prefix):
            return None
        priority, _, tenant = message[len(self.keys.wait_prefix) :].partition(":")
        if priority not in PRIORITIES or not tenant:
            return None
        return WaitStarted(message, priority, tenant)

    def step_aside(self, worker_id: str, started: WaitStarted, entries: Sequence[Entry]) -> set[str]:
        """Hand back entries read ahead and not started, so that the first entries of the
        waiting stream ``started`` are admitted ahead of them (``lua/step_aside.lua``).
        Returns the ids of the entries this worker no longer holds (they are back in the
        stream under new ids); none when nothing waits there any more, and then it keeps
        them all."""
        if not entries:
            return set()
        keys = [self.keys.queue, started.stream] + [self.keys.prediction(e.prediction_id) for e in entries]
        sids = [e.sid for e in entries]
        args: list[Any] = [GROUP, worker_id, *sid_range(sids), sum(e.count for e in entries), *sids]
        reply = self._run_scripts([(script("step_aside"), keys, args)])[0]
        return {sid.decode() for sid in reply}

    def heartbeat(self, worker_id: str, fields: dict[str, str], ttl_s: float) -> None:
        """Refresh the worker's registry entry, and measure Redis's clock against this
        machine's (``clock_offset_ms``).

        The expiry is refreshed even when Redis refuses the rest (out of memory refuses
        HSET but not PEXPIRE), so the worker stays alive to its peers through such a
        spell. Raises the first error, after sending everything.
        """
        key = self.keys.worker(worker_id)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=_hash_fields(fields))
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(self.keys.workers, {worker_id: time.time()})
            pipe.time()
            sent = time.time()
            replies = pipe.execute(raise_on_error=False)
            received = time.time()
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        seconds, micros = replies[-1]
        # Redis read its clock about halfway through the round trip.
        self.clock_offset_ms = (seconds + micros / 1e6 - (sent + received) / 2) * 1000

    def add_metrics(self, worker_id: str, sequence: int, metrics: Mapping[str, float]) -> bool:
        """Add counts and observations (deltas) to the metrics hash, all or none, and only
        once: a report is numbered (``sequence`` grows with each of the worker's reports),
        so one sent again after its reply was lost is not counted twice. Returns whether
        it was applied now (False: it had been already)."""
        args: list[Any] = [worker_id, sequence]
        for name, amount in metrics.items():
            args += [name, float(amount) if name.endswith(":sum") else int(amount)]
        keys = [self.keys.metrics, self.keys.metrics_applied]
        return bool(self._run_scripts([(script("metrics"), keys, args)])[0])

    def unregister(self, worker_id: str) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id), self.keys.running(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            pipe.execute()

    def release(self, worker_id: str) -> None:
        """A worker's process is known to have exited: forget its heartbeat, so live
        workers take over its entries now instead of when the heartbeat would expire."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            pipe.execute()

    def forget_dead_workers(self) -> int:
        """Drop index entries of workers whose heartbeat key is gone; returns how many."""
        keys = [self.keys.workers, self.keys.metrics_applied]
        return int(self._run_scripts([(script("prune"), keys, [self.keys.worker_prefix])])[0])

    def _run_scripts(self, calls: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        if not calls:
            return []
        replies = self._pipeline_scripts(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            # Redis restarted and lost its script cache: load them and run just those again.
            for i in missing:
                self._redis.script_load(calls[i][0].source)
            retried = self._pipeline_scripts([calls[i] for i in missing])
            for i, reply in zip(missing, retried):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _pipeline_scripts(self, calls: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(pipe.execute(raise_on_error=False))


def _as_body(result: EntryResult, completed: str) -> tuple[ResultKind, str]:
    """A whole prediction's result becomes its finished body, rendered here once."""
    entry = result.entry
    if not entry.whole or result.kind not in (EntryResult.OUTPUTS, EntryResult.ERROR):
        return result.kind, result.payload
    if result.kind == EntryResult.OUTPUTS:
        body = render_body("success", f"[{result.payload}]", None, entry.created, result.started, completed)
    else:
        body = render_body("failed", None, result.payload, entry.created, result.started, completed)
    return EntryResult.BODY, body


def _hash_fields(fields: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    """``fields`` as redis-py's ``HSET`` mapping type names them."""
    return {name: value for name, value in fields.items()}
