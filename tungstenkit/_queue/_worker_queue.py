"""The worker's side of the data model (blocking): read, start, finish, recover."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

from tungstenkit._queue._keys import FORGET_IDLE_CONSUMER_MS, GROUP, RUNNING_KEY_TTL_S, Keys, now_iso
from tungstenkit._queue._records import (
    FILE_TTL_FACTOR,
    READ_FIELDS,
    BatchStart,
    Entry,
    EntryResult,
    Fetched,
    read_prediction,
    render_body,
)
from tungstenkit._queue._scripts import Script, script


@dataclass(frozen=True)
class WriteReport:
    """What a write found: per started batch, the predictions that had already ended
    (canceled, failed: they must not produce outputs); and the predictions the results
    ended, with their outcome (success or failed)."""

    ended_before_start: list[set[str]]
    ended: list[tuple[str, str]]


#: Ended bodies up to this size travel on the done channel, so waiting requests need
#: not read them back; larger ones (images, say) are read from the prediction's hash.
INLINE_BODY_BYTES = 32 * 1024


class WorkerQueue:
    """What a worker does with Redis: read entries, mark batches started, write results."""

    def __init__(self, client: redis.Redis, keys: Keys, *, result_ttl_s: int) -> None:
        self._redis = client
        self.keys = keys
        self._ttl = result_ttl_s

    def ensure_group(self) -> None:
        try:
            # From the stream's first entry, so inputs queued before any worker ran are read.
            self._redis.xgroup_create(self.keys.queue, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer; waits up to ``block_ms`` (None: not at all)."""
        reply = self._redis.xreadgroup(GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms)
        entries = []
        for _stream, items in reply or ():
            for sid, fields in items:
                if fields:
                    entries.append(Entry.from_fields(sid, fields))
        return entries

    def write(self, worker_id: str, started: Sequence[BatchStart], results: Sequence[EntryResult]) -> WriteReport:
        """Mark batches started and record results, in one round trip."""
        results = self._store_files(results)
        calls: list[tuple[Script, list[str], list[Any]]] = []
        stamp = now_iso()
        for batch in started:
            keys = [self.keys.running(worker_id), self.keys.webhooks]
            keys += [self.keys.prediction(p) for p in batch.prediction_ids]
            calls.append((script("start"), keys, [stamp, " ".join(batch.sids), RUNNING_KEY_TTL_S, *batch.flags()]))
        if results:
            keys = [self.keys.queue, self.keys.queued, self.keys.webhooks]
            args: list[Any] = [
                GROUP, stamp, self._ttl, self.keys.done_channel, self.keys.stop_channel, INLINE_BODY_BYTES
            ]
            for result in results:
                entry = result.entry
                kind, payload = _as_body(result, stamp)
                keys.append(self.keys.prediction(entry.prediction_id))
                args += [
                    entry.prediction_id, entry.sid, kind, entry.start, entry.count, payload, result.started,
                    entry.webhook_events,
                ]
            calls.append((script("finish"), keys, args))
        replies = self._run_scripts(calls)
        ended_first = [{batch.prediction_ids[i - 1] for i in reply} for batch, reply in zip(started, replies)]
        outcomes = replies[len(started)] if results else []
        ended = [(outcomes[i].decode(), outcomes[i + 1].decode()) for i in range(0, len(outcomes), 2)]
        return WriteReport(ended_first, ended)

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
            for item in reply:
                if item and item[1]:
                    sid, flat = item[0], item[1]
                    claimed.append(Entry.from_fields(sid, dict(zip(flat[::2], flat[1::2])), redelivered=True))
        return claimed

    def reclaim_forgotten(self, worker_id: str, min_idle_ms: int, held: set[str]) -> list[Entry]:
        """Entries pending for this worker, idle for long, that it no longer holds.

        They arise when a result write was lost (a Redis failover, a bug): claiming them
        again resets their idle time and hands them back to the worker to run.
        """
        pending = self._redis.xpending_range(
            self.keys.queue, GROUP, min="-", max="+", count=1000, consumername=worker_id, idle=min_idle_ms
        )
        forgotten = [p["message_id"] for p in pending if p["message_id"].decode() not in held]
        if not forgotten:
            return []
        claimed = self._redis.xclaim(self.keys.queue, GROUP, worker_id, min_idle_ms, forgotten)
        return [Entry.from_fields(sid, fields, redelivered=True) for sid, fields in claimed if fields]

    def _store_files(self, results: Sequence[EntryResult]) -> list[EntryResult]:
        """Write output files before the results that link to them become visible.

        A result whose files Redis refuses (out of memory, say) becomes an error, so
        its prediction fails with the reason instead of being retried forever.
        """
        with_files = [i for i, r in enumerate(results) if r.files and r.kind == EntryResult.OUTPUTS]
        if not with_files:
            return list(results)
        ttl_ms = self._ttl * FILE_TTL_FACTOR * 1000
        with self._redis.pipeline(transaction=False) as pipe:
            for i in with_files:
                for stored in results[i].files:
                    key = self.keys.file(stored.name)
                    fields: dict[str | bytes, str | bytes] = {
                        "p": results[i].entry.prediction_id,
                        "t": stored.mime_type,
                        "d": stored.data,
                    }
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                    pipe.pexpire(key, ttl_ms)
            replies = iter(pipe.execute(raise_on_error=False))
        checked = list(results)
        for i in with_files:
            errors = [r for _ in range(2 * len(results[i].files)) if isinstance(r := next(replies), Exception)]
            if errors:
                message = f"OutputFilesNotStored: Redis refused the output files: {errors[0]}"
                checked[i] = EntryResult(results[i].entry, EntryResult.ERROR, message)
        return checked

    def fetch(self, prediction_id: str) -> Fetched | None:
        """A prediction as the API would show it (for tools and tests)."""
        return read_prediction(self._redis.hmget(self.keys.prediction(prediction_id), READ_FIELDS))

    def requeue(self, entries: Sequence[Entry]) -> int:
        """Hand entries that were read but never started back to the stream."""
        if not entries:
            return 0
        keys = [self.keys.queue] + [self.keys.prediction(e.prediction_id) for e in entries]
        args: list[Any] = [GROUP]
        for e in entries:
            args += [e.sid, e.prediction_id, e.start, e.count, e.group, e.data, e.total, e.created, e.webhook_events]
        return int(self._run_scripts([(script("requeue"), keys, args)])[0])

    def heartbeat(
        self, worker_id: str, fields: dict[str, str], ttl_s: float, metrics: Mapping[str, float] | None = None
    ) -> None:
        """Refresh the worker's registry entry, and add ``metrics`` (deltas) to the metrics hash."""
        # A transaction, so that deltas are added entirely or not at all (then sent again).
        with self._redis.pipeline(transaction=bool(metrics)) as pipe:
            pipe.hset(self.keys.worker(worker_id), mapping=fields)
            pipe.pexpire(self.keys.worker(worker_id), int(ttl_s * 1000))
            pipe.zadd(self.keys.workers, {worker_id: time.time()})
            self._add_metrics(pipe, metrics or {})
            pipe.execute()

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        """Add counts and observations (deltas) to the metrics hash, all or none."""
        if metrics:
            with self._redis.pipeline(transaction=True) as pipe:
                self._add_metrics(pipe, metrics)
                pipe.execute()

    def _add_metrics(self, pipe: Any, metrics: Mapping[str, float]) -> None:
        for field, amount in metrics.items():
            if field.endswith(":sum"):
                pipe.hincrbyfloat(self.keys.metrics, field, float(amount))
            else:
                pipe.hincrby(self.keys.metrics, field, int(amount))

    def unregister(self, worker_id: str) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id), self.keys.running(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            pipe.execute()

    def forget_dead_workers(self) -> None:
        """Drop index entries of workers whose heartbeat key expired."""
        ids = self._redis.zrange(self.keys.workers, 0, -1)
        with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.exists(self.keys.worker(worker_id.decode()))
            alive = pipe.execute()
        dead = [w for w, ok in zip(ids, alive) if not ok]
        if dead:
            self._redis.zrem(self.keys.workers, *dead)

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


def _as_body(result: EntryResult, completed: str) -> tuple[str, str]:
    """A whole prediction's result becomes its finished body, rendered here once."""
    entry = result.entry
    if not entry.whole or result.kind not in (EntryResult.OUTPUTS, EntryResult.ERROR):
        return result.kind, result.payload
    if result.kind == EntryResult.OUTPUTS:
        body = render_body("success", f"[{result.payload}]", None, entry.created, result.started, completed)
    else:
        body = render_body("failed", None, result.payload, entry.created, result.started, completed)
    return EntryResult.BODY, body
