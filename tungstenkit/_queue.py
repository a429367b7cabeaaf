"""The Redis data model: every key, script and state transition, for the API and the workers.

Nothing else formats a key or calls a script. A prediction is a hash; its inputs travel
as entries of one stream that the workers read through one consumer group::

    tungsten:{ns}:queue          stream, one entry per chunk of a prediction's inputs
                                 (fields p=id s=start n=count g=option group d=JSON list)
    tungsten:{ns}:queued         inputs accepted and not yet finished (the queue bound)
    tungsten:{ns}:pred:<id>      hash: status created started completed outputs error
                                 n left entries ("sid:start:count ...") o:<start> partials
    tungsten:{ns}:done           channel: ids of predictions that just ended
    tungsten:{ns}:stop           channel: ids whose remaining work workers must drop
    tungsten:{ns}:workers        zset index of worker ids; each live worker refreshes
    tungsten:{ns}:worker:<wid>   hash with a short TTL (its heartbeat)
    tungsten:{ns}:running:<wid>  the entry ids of the batch a worker is running (for
                                 counting crashes if it dies)
    tungsten:{ns}:file:<name>    hash: p (prediction id) t (media type) d (bytes) of an
                                 output file served as ``GET /files/<name>``
    tungsten:{ns}:metrics        hash: counters and histograms (see ``_metrics.py``)
    tungsten:{ns}:webhooks       list: "<id> <event>" for each webhook event that happened;
                                 a prediction that asked for one has hash fields
                                 webhook (URL) and webhook_events
    tungsten:{ns}:webhooks:dispatching   list: the events being turned into RQ jobs
    tungsten:{ns}:webhooks:lock  who dispatches webhook events (one process at a time)
    tungsten:{ns}:webhooks:secret  the generated signing secret (without a configured one)

Webhook deliveries are RQ jobs on the queue ``Keys.webhook_queue`` (RQ's own keys, its
JSON serializer).

The ``{ns}`` hash tag keeps every key of a namespace in one Redis Cluster slot, as Lua
needs. Values are JSON or plain strings: nothing read from Redis is ever unpickled.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from tungstenkit._errors import PredictionNotFound, QueueFull, RedisUnavailable
from tungstenkit._metrics import lua_prelude

GROUP = "workers"
#: A dead consumer with nothing pending is removed from the group after this idle time.
_FORGET_IDLE_CONSUMER_MS = 60_000
STATUS_FIELDS = ("status", "created", "started", "completed", "outputs", "error")
TERMINAL_STATUSES = frozenset({"success", "failed"})
CANCELED_MESSAGE = "Canceled"

#: The errors that mean Redis could not be reached or did not answer in time.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class Keys:
    """Key and channel names of one namespace."""

    def __init__(self, namespace: str) -> None:
        if not namespace or any(c in namespace for c in "{} \n"):
            raise ValueError(f"invalid namespace {namespace!r}")
        self.namespace = namespace
        self.prefix = f"tungsten:{{{namespace}}}:"
        self.queue = self.prefix + "queue"
        self.queued = self.prefix + "queued"
        self.workers = self.prefix + "workers"
        self.done_channel = self.prefix + "done"
        self.stop_channel = self.prefix + "stop"
        self.metrics = self.prefix + "metrics"
        self.webhooks = self.prefix + "webhooks"
        self.webhooks_dispatching = self.prefix + "webhooks:dispatching"
        self.webhooks_lock = self.prefix + "webhooks:lock"
        self.webhooks_secret = self.prefix + "webhooks:secret"

    def prediction(self, prediction_id: str) -> str:
        return f"{self.prefix}pred:{prediction_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def running(self, worker_id: str) -> str:
        return f"{self.prefix}running:{worker_id}"

    @property
    def prediction_prefix(self) -> str:
        return f"{self.prefix}pred:"

    def file(self, name: str) -> str:
        return f"{self.prefix}file:{name}"

    @property
    def webhook_queue(self) -> str:
        """The name of the RQ queue of this namespace's webhook deliveries."""
        return f"tungsten-webhooks-{self.namespace}"


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A blocking client for ``url`` once Redis answers; ``RedisUnavailable`` after ``timeout_s``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=15, health_check_interval=30)
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            client.ping()
            return client
        except redis.AuthenticationError as exc:
            client.close()
            raise RedisUnavailable(f"Redis at {redacted(url)} refused the password: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                client.close()
                raise RedisUnavailable(f"Cannot reach Redis at {redacted(url)}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string, as predictions report it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------
# Scripts


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    @property
    def sha(self) -> str:
        import hashlib

        return hashlib.sha1(self.source.encode()).hexdigest()


@cache
def _script(name: str, with_common: bool = False) -> Script:
    folder = resources.files("tungstenkit") / "_lua"
    source = (folder / f"{name}.lua").read_text()
    if with_common:
        source = lua_prelude() + (folder / "common.lua").read_text() + "\n" + source
    return Script(name, source)


def submit_script() -> Script:
    return _script("submit")


def start_script() -> Script:
    return _script("start", with_common=True)


@cache
def webhook_submit_script() -> Script:
    """submit.lua wrapped as a function, then storing the webhook of an accepted prediction."""
    folder = resources.files("tungstenkit") / "_lua"
    submit = (folder / "submit.lua").read_text()
    source = f"local function submit()\n{submit}\nend\n" + (folder / "webhook_submit.lua").read_text()
    return Script("webhook_submit", source)


#: How long a worker's running key outlives its last batch start; a dead worker's
#: key must survive until another worker reclaims its entries.
RUNNING_KEY_TTL_S = 7 * 24 * 3600


def finish_script() -> Script:
    return _script("finish", with_common=True)


def cancel_script() -> Script:
    return _script("cancel", with_common=True)


def requeue_script() -> Script:
    return _script("requeue")


def reclaim_script() -> Script:
    return _script("reclaim", with_common=True)


def lock_script() -> Script:
    return _script("lock")


# ---------------------------------------------------------------------------------
# What travels through the stream


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive inputs of one prediction that share an option group."""

    start: int
    count: int
    group: str
    data: str  # JSON list of the inputs


def split_into_chunks(inputs: Sequence[str], groups: Sequence[str], max_size: int) -> list[Chunk]:
    """Cut a prediction's inputs (each a JSON object string) into stream entries.

    A chunk never mixes option groups and never holds more than ``max_size`` inputs,
    so several workers can share a large request.
    """
    chunks: list[Chunk] = []
    start = 0
    while start < len(inputs):
        end = start + 1
        while end < len(inputs) and end - start < max_size and groups[end] == groups[start]:
            end += 1
        chunks.append(Chunk(start, end - start, groups[start], "[" + ",".join(inputs[start:end]) + "]"))
        start = end
    return chunks


@dataclass
class Entry:
    """A stream entry as a worker holds it."""

    sid: str
    prediction_id: str
    start: int
    count: int
    group: str
    data: bytes

    @classmethod
    def from_fields(cls, sid: bytes | str, fields: dict[bytes, bytes]) -> Entry:
        return cls(
            sid=sid.decode() if isinstance(sid, bytes) else sid,
            prediction_id=fields[b"p"].decode(),
            start=int(fields[b"s"]),
            count=int(fields[b"n"]),
            group=fields[b"g"].decode(),
            data=fields[b"d"],
        )


@dataclass(frozen=True)
class BatchStart:
    """A batch that began: the predictions it serves and the entries it runs."""

    prediction_ids: list[str]
    sids: list[str]


@dataclass(frozen=True)
class StoredFile:
    """An output file kept in Redis for ``GET /files/<name>`` (``output_files=url``)."""

    name: str
    mime_type: str
    data: bytes


#: Output files outlive their prediction's TTL by this factor, so that a file written
#: when one entry finished is still there when the last entry ends the prediction. The
#: API serves a file only while its prediction exists and succeeded.
FILE_TTL_FACTOR = 2


@dataclass(frozen=True)
class EntryResult:
    """What became of an entry: outputs (``OUTPUTS``), an error, or dropped unrun."""

    OUTPUTS = "o"
    ERROR = "e"
    DROPPED = "x"

    entry: Entry
    kind: str
    #: For outputs, the entry's outputs as JSON objects joined by commas; for an
    #: error, its message.
    payload: str = ""
    #: For outputs, the files their links point to (``output_files=url``).
    files: tuple[StoredFile, ...] = ()


# ---------------------------------------------------------------------------------
# Rendering a prediction as the REST API shows it


def _json_or_null(value: bytes | None) -> bytes:
    return b"null" if value is None else json.dumps(value.decode()).encode()


def render_prediction(values: Sequence[bytes | None]) -> bytes | None:
    """The ``GET /predictions/{id}`` body from the hash's ``STATUS_FIELDS``; None if absent.

    Outputs are stored as the JSON text the worker produced and are copied through
    without being parsed again.
    """
    status, created, started, completed, outputs, error = values
    if status is None:
        return None
    return b"".join(
        (
            b'{"outputs":',
            outputs if outputs is not None and status == b"success" else b"null",
            b',"status":"',
            status,
            b'","error_message":',
            _json_or_null(error),
            b',"created_at":',
            _json_or_null(created),
            b',"started_at":',
            _json_or_null(started),
            b',"completed_at":',
            _json_or_null(completed),
            b"}",
        )
    )


def status_of(body: bytes) -> str:
    """The status in a rendered prediction body."""
    marker = body.index(b'"status":"') + 10
    return body[marker : body.index(b'"', marker)].decode()


# ---------------------------------------------------------------------------------
# The API's side (asyncio)


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    fields: dict[str, str]


class AsyncPredictionQueue:
    """What the API does with Redis: submit, read, cancel, and report health."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, *, result_ttl_s: int, max_queued_inputs: int) -> None:
        self._redis = client
        self.keys = keys
        self._ttl = result_ttl_s
        self._limit = max_queued_inputs

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            try:
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self._redis.script_load(script.source)
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc

    async def submit(self, prediction_id: str, chunks: Sequence[Chunk], total_inputs: int) -> None:
        """Accept a prediction; raises ``QueueFull`` past the queue bound."""
        args: list[Any] = [prediction_id, now_iso(), total_inputs, self._limit]
        for chunk in chunks:
            args += [chunk.start, chunk.count, chunk.group, chunk.data]
        accepted, queued = await self._eval(
            submit_script(), [self.keys.queue, self.keys.queued, self.keys.prediction(prediction_id)], args
        )
        if not accepted:
            raise QueueFull(int(queued), self._limit)

    async def submit_with_webhook(
        self, prediction_id: str, chunks: Sequence[Chunk], total_inputs: int, url: str, events: Sequence[str]
    ) -> None:
        """``submit``, also recording the webhook to call when one of ``events`` happens."""
        args: list[Any] = [prediction_id, now_iso(), total_inputs, self._limit]
        for chunk in chunks:
            args += [chunk.start, chunk.count, chunk.group, chunk.data]
        args += [url, " ".join(events)]
        accepted, queued = await self._eval(
            webhook_submit_script(), [self.keys.queue, self.keys.queued, self.keys.prediction(prediction_id)], args
        )
        if not accepted:
            raise QueueFull(int(queued), self._limit)

    async def snapshot(self) -> Snapshot:
        """Queue depth, metrics, live workers and waiting webhook events, in two round trips."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                _ask_snapshot(pipe, self.keys)
                first = await pipe.execute()
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in first[2]:
                    pipe.hgetall(self.keys.worker(worker_id.decode()))
                found = await pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        return _snapshot(first, found)

    async def fetch(self, prediction_id: str) -> bytes | None:
        """The prediction's rendered body, or None if there is no such prediction."""
        try:
            values = await self._redis.hmget(self.keys.prediction(prediction_id), STATUS_FIELDS)
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        return render_prediction(values)

    async def cancel(self, prediction_id: str) -> bytes:
        """Cancel the prediction unless it ended; returns its body afterwards."""
        outcome = await self._eval(
            cancel_script(),
            [
                self.keys.prediction(prediction_id),
                self.keys.queue,
                self.keys.queued,
                self.keys.metrics,
                self.keys.webhooks,
            ],
            [prediction_id, now_iso(), self._ttl, self.keys.done_channel, self.keys.stop_channel],
        )
        body = await self.fetch(prediction_id) if outcome != -1 else None
        if body is None:
            raise PredictionNotFound(prediction_id)
        return body

    async def fetch_file(self, name: str) -> tuple[str, bytes] | None:
        """An output file's media type and bytes, while its prediction is readable and succeeded."""
        try:
            owner, mime_type, data = await self._redis.hmget(self.keys.file(name), ["p", "t", "d"])
            if not isinstance(owner, bytes) or not isinstance(data, bytes):
                return None
            status = await self._redis.hget(self.keys.prediction(owner.decode()), "status")
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        if status != b"success":
            return None
        return (mime_type if isinstance(mime_type, bytes) else b"application/octet-stream").decode(), data

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc

    async def queued_inputs(self) -> int:
        try:
            value = await self._redis.get(self.keys.queued)
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        return int(value or 0)

    async def workers(self) -> list[WorkerInfo]:
        try:
            ids = await self._redis.zrange(self.keys.workers, 0, -1)
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(self.keys.worker(worker_id.decode()))
                found = await pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        return _live_workers(ids, found)


def _live_workers(ids: Iterable[bytes], found: Iterable[dict[bytes, bytes]]) -> list[WorkerInfo]:
    workers = []
    for worker_id, fields in zip(ids, found):
        if fields:
            workers.append(WorkerInfo(worker_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return workers


# ---------------------------------------------------------------------------------
# Monitoring: /metrics, /health and `tungsten status`


@dataclass(frozen=True)
class Snapshot:
    """One namespace's state as monitoring shows it."""

    queued_inputs: int
    #: The metrics hash (``_metrics.py`` names its fields).
    metrics: dict[str, float]
    workers: list[WorkerInfo]
    #: Webhook events not yet handed to RQ.
    webhook_events_waiting: int


def _ask_snapshot(pipe: Any, keys: Keys) -> None:
    pipe.get(keys.queued)
    pipe.hgetall(keys.metrics)
    pipe.zrange(keys.workers, 0, -1)
    pipe.llen(keys.webhooks)
    pipe.llen(keys.webhooks_dispatching)


def _snapshot(first: Sequence[Any], found: Sequence[dict[bytes, bytes]]) -> Snapshot:
    queued, metrics, ids, waiting, dispatching = first
    return Snapshot(
        queued_inputs=int(queued or 0),
        metrics={k.decode(): float(v) for k, v in metrics.items()},
        workers=_live_workers(ids, found),
        webhook_events_waiting=int(waiting) + int(dispatching),
    )


def read_snapshot(client: redis.Redis, keys: Keys) -> Snapshot:
    """``AsyncPredictionQueue.snapshot`` for blocking callers (``tungsten status``)."""
    with client.pipeline(transaction=False) as pipe:
        _ask_snapshot(pipe, keys)
        first = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for worker_id in first[2]:
            pipe.hgetall(keys.worker(worker_id.decode()))
        found = pipe.execute()
    return _snapshot(first, found)


def find_namespaces(client: redis.Redis) -> list[str]:
    """The namespaces that have a queue in this Redis (one per served model)."""
    found = set()
    for key in client.scan_iter(match="tungsten:{*}:queue", count=1000, _type="stream"):
        name = key.decode() if isinstance(key, bytes) else key
        found.add(name[len("tungsten:{") : -len("}:queue")])
    return sorted(found)


# ---------------------------------------------------------------------------------
# The worker's side (blocking)


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

    def write(self, worker_id: str, started: Sequence[BatchStart], results: Sequence[EntryResult]) -> list[set[str]]:
        """Mark batches started and record results, in one round trip.

        For each started batch, the returned set names the predictions that had
        already ended (canceled, failed) and so must not produce outputs.
        """
        results = self._store_files(results)
        calls: list[tuple[Script, list[str], list[Any]]] = []
        stamp = now_iso()
        for batch in started:
            keys = [self.keys.running(worker_id)] + [self.keys.prediction(p) for p in batch.prediction_ids]
            begun = [stamp, " ".join(batch.sids), RUNNING_KEY_TTL_S, self.keys.metrics, self.keys.webhooks]
            calls.append((start_script(), keys, begun))
        if results:
            keys = [self.keys.queue, self.keys.queued]
            args: list[Any] = [GROUP, stamp, self._ttl, self.keys.done_channel, self.keys.stop_channel]
            for result in results:
                entry = result.entry
                keys.append(self.keys.prediction(entry.prediction_id))
                args += [entry.prediction_id, entry.sid, result.kind, entry.start, entry.count, result.payload]
            keys += [self.keys.metrics, self.keys.webhooks]
            calls.append((finish_script(), keys, args))
        replies = self._run_scripts(calls)
        return [{batch.prediction_ids[i - 1] for i in reply} for batch, reply in zip(started, replies)]

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
                if consumer["idle"] > _FORGET_IDLE_CONSUMER_MS:
                    self._redis.xgroup_delconsumer(self.keys.queue, GROUP, name)
                continue
            reply = self._run_scripts(
                [
                    (
                        reclaim_script(),
                        [self.keys.queue, self.keys.queued, self.keys.running(name), self.keys.metrics, self.keys.webhooks],
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
                    claimed.append(Entry.from_fields(sid, dict(zip(flat[::2], flat[1::2]))))
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
        return [Entry.from_fields(sid, fields) for sid, fields in claimed if fields]

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

    def requeue(self, entries: Sequence[Entry]) -> int:
        """Hand entries that were read but never started back to the stream."""
        if not entries:
            return 0
        keys = [self.keys.queue] + [self.keys.prediction(e.prediction_id) for e in entries]
        args: list[Any] = [GROUP]
        for e in entries:
            args += [e.sid, e.prediction_id, e.start, e.count, e.group, e.data]
        return int(self._run_scripts([(requeue_script(), keys, args)])[0])

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


# ---------------------------------------------------------------------------------
# Webhooks (the webhook worker's side, blocking)


@dataclass(frozen=True)
class WebhookEvent:
    """A prediction's event to announce: where to, and its ``GET`` body at this moment."""

    item: str
    prediction_id: str
    event: str
    url: str
    body: bytes


class WebhookQueue:
    """Webhook events that the scripts queued, on their way to becoming RQ jobs.

    One process at a time (the lock holder) moves events from the webhook list to a
    dispatching list, makes an RQ job of each, then removes it; a new lock holder first
    finishes what a dead one left in the dispatching list, so no event is lost (one may
    be delivered twice).
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self.keys = keys

    def hold_lock(self, owner: str, ttl_ms: int) -> bool:
        """Take or keep the dispatcher's lock; False while another process holds it."""
        script = lock_script()
        args = (script.sha, 1, self.keys.webhooks_lock, owner, ttl_ms)
        try:
            return bool(self._redis.evalsha(*args))
        except NoScriptError:
            self._redis.script_load(script.source)
            return bool(self._redis.evalsha(*args))

    def release_lock(self, owner: str) -> None:
        if self._redis.get(self.keys.webhooks_lock) == owner.encode():
            self._redis.delete(self.keys.webhooks_lock)

    def take(self, timeout_s: float) -> str | None:
        """The next event, moved to the dispatching list; None after ``timeout_s``."""
        item = self._redis.blmove(
            self.keys.webhooks, self.keys.webhooks_dispatching, timeout_s, "LEFT", "RIGHT"  # type: ignore[arg-type]
        )
        return item.decode() if isinstance(item, bytes) else None

    def dispatching(self) -> list[str]:
        """Events a dispatcher took but did not finish (it died)."""
        items: list[bytes] = self._redis.lrange(self.keys.webhooks_dispatching, 0, -1)  # type: ignore[assignment]
        return [item.decode() for item in items]

    def dispatched(self, item: str) -> None:
        self._redis.lrem(self.keys.webhooks_dispatching, 1, item)

    def event(self, item: str) -> WebhookEvent | None:
        """What to send for a queued event; None if the prediction expired meanwhile.

        A ``start`` event shows the prediction as it was when it started (running, no
        outputs), even if it ended before the event was sent.
        """
        prediction_id, _, event = item.partition(" ")
        values: list[Any] = self._redis.hmget(self.keys.prediction(prediction_id), ["webhook", *STATUS_FIELDS])
        if event == "start" and values[1] is not None:
            _status, created, started, _completed, _outputs, _error = values[1:]
            values[1:] = [b"running", created, started, None, None, None]
        url, body = values[0], render_prediction(values[1:])
        if not isinstance(url, bytes) or body is None:
            return None
        return WebhookEvent(item, prediction_id, event, url.decode(), body)

    def secret(self) -> str:
        """The namespace's generated signing secret, created on first use."""
        self._redis.set(self.keys.webhooks_secret, secrets.token_hex(32), nx=True)
        value = self._redis.get(self.keys.webhooks_secret)
        assert isinstance(value, bytes)
        return value.decode()

    def count(self, outcome: str) -> None:
        """Count a delivery attempt's outcome (``_metrics.WEBHOOK_OUTCOMES``)."""
        self._redis.hincrby(self.keys.metrics, f"webhooks:{outcome}", 1)
