"""The API's side of the data model (asyncio): submit, read, cancel, health.

Concurrent requests share round trips: what they ask of Redis during one turn of the
event loop goes out as one pipeline, and all submits of that turn as one script call.
With ``wait_replicas``, that call is followed by ``WAIT`` on the same connection, and
the reads of the turn go out on another one so that they do not wait for the replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis.asyncio
from redis.exceptions import NoScriptError

from tungstenkit._errors import (
    IdempotencyKeyReused,
    NotReplicated,
    OwnerQueueFull,
    PredictionNotFound,
    QueueFull,
    RedisUnavailable,
)
from tungstenkit._queue._api_keys import ApiKey
from tungstenkit._queue._keys import ADMITTED_BATCHES_PER_WORKER, CONNECTION_ERRORS, Keys, now_iso
from tungstenkit._queue._monitoring import Snapshot, WorkerInfo, ask_snapshot, live_workers, make_snapshot
from tungstenkit._queue._records import (
    EVENTS_PER_READ,
    READ_FIELDS,
    Chunk,
    EventsRead,
    Fetched,
    events_read,
    read_prediction,
)
from tungstenkit._queue._scripts import Script, script
from tungstenkit._queue._wire import FILE, NO_TENANT

T = TypeVar("T")

#: The submit script's flags for each prediction (besides an idempotency key's answer).
_QUEUE_FULL, _ACCEPTED, _OWNER_QUEUE_FULL = 0, 1, 2

logger = logging.getLogger(__name__)

#: Redis away (or not answering in time): what callers see as ``RedisUnavailable``.
_UNREACHABLE: tuple[type[BaseException], ...] = (RedisUnavailable, *CONNECTION_ERRORS)
_UNREACHABLE_OR_GONE: tuple[type[BaseException], ...] = (*_UNREACHABLE, PredictionNotFound)
_NO_ANSWER: tuple[type[BaseException], ...] = (asyncio.TimeoutError, *CONNECTION_ERRORS)


@dataclass(frozen=True)
class Idempotency:
    """A request's ``Idempotency-Key``, scoped to its tenant, and the fingerprint of the
    request: a retry with the same key and the same request is the same prediction."""

    #: SHA-256 of tenant and key: the key itself is never stored.
    digest: str
    #: SHA-256 of what makes the request what it is (its inputs and parameters).
    fingerprint: str

    @classmethod
    def of(cls, tenant: str, key: str, request: Sequence[str]) -> Idempotency:
        digest = hashlib.sha256(f"{len(tenant)}:{tenant}:{key}".encode()).hexdigest()
        fingerprint = hashlib.sha256()
        for part in request:  # length-prefixed, so that no two requests read the same
            data = part.encode()
            fingerprint.update(len(data).to_bytes(8, "big") + data)
        return cls(digest, fingerprint.hexdigest())


@dataclass
class Submission:
    """One prediction to accept, as the submit script takes it."""

    prediction_id: str
    chunks: Sequence[Chunk]
    total_inputs: int
    webhook_url: str
    webhook_events: str
    idempotency: Idempotency | None = None
    #: The API key owner it is created for ("" without keys), and how many inputs that
    #: owner's predictions may have queued (0: no limit).
    owner: str = ""
    owner_limit: int = 0
    #: Milliseconds from now by which a worker must start it, else it fails (0: no deadline).
    deadline_ms: int = 0
    #: Its priority (``PRIORITIES``), and whose share of the workers it is (see ``tenant_token``).
    priority: str = "normal"
    tenant: str = ""


class AsyncPredictionQueue:
    """What the API does with Redis."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        result_ttl_s: int,
        max_queued_inputs: int,
        timeout_s: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
        batch_size: int = 32,
    ) -> None:
        self._redis = client
        self._admitted_per_worker = ADMITTED_BATCHES_PER_WORKER * batch_size
        self.keys = keys
        self._ttl = result_ttl_s
        self._limit = max_queued_inputs
        self._timeout = timeout_s
        self._wait_replicas = wait_replicas
        self._wait_timeout = wait_timeout_s
        self._submits: list[tuple[Submission, asyncio.Future[Any]]] = []
        self._fetches: list[tuple[str, asyncio.Future[Any]]] = []
        self._rates: list[tuple[tuple[str, float], asyncio.Future[Any]]] = []
        self._event_reads: list[tuple[tuple[str, str], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    # -- the hot path: shared round trips ------------------------------------------------
    async def submit(
        self,
        prediction_id: str,
        chunks: Sequence[Chunk],
        total_inputs: int,
        webhook_url: str = "",
        webhook_events: Sequence[str] = (),
        idempotency: Idempotency | None = None,
        owner: str = "",
        owner_limit: int = 0,
        deadline_ms: int = 0,
        priority: str = "normal",
        tenant: str = "",
    ) -> str:
        """Accept a prediction (with the webhook to call on ``webhook_events``, if any,
        for the API key owner ``owner``, who may have ``owner_limit`` inputs queued);
        raises ``QueueFull`` past the queue bound, ``OwnerQueueFull`` past the owner's,
        and ``NotReplicated`` when fewer than ``wait_replicas`` replicas hold it in time.
        With ``deadline_ms``, a prediction no worker started within that many
        milliseconds (of Redis's clock) fails unrun.
        When the workers have more than enough to do, it waits for admission by
        ``priority`` and in turns with the other ``tenant`` s (``lua/admission.lua``).

        Returns the id of the prediction that serves the request: ``prediction_id``, or,
        for a request whose ``idempotency`` key came with the same request before, that
        one's prediction (nothing new is queued). The key used with another request
        raises ``IdempotencyKeyReused``.
        """
        submit = Submission(
            prediction_id,
            chunks,
            total_inputs,
            webhook_url,
            " ".join(webhook_events),
            idempotency,
            owner,
            owner_limit,
            deadline_ms,
            priority,
            tenant,
        )
        accepted, queued, served_by = await self._enqueue(self._submits, submit)
        if accepted == _QUEUE_FULL:
            raise QueueFull(queued, self._limit)
        if accepted == _OWNER_QUEUE_FULL:
            raise OwnerQueueFull(owner_limit)
        return cast(str, served_by)

    async def fetch(self, prediction_id: str) -> Fetched | None:
        """The prediction's GET body, or None if there is no such prediction."""
        return cast("Fetched | None", await self._enqueue(self._fetches, prediction_id))

    async def read_events(self, prediction_id: str, after: str = "") -> EventsRead | None:
        """The prediction as it stands and its stored events after the event id ``after``
        (from the first: ""), at most ``EVENTS_PER_READ``; None if there is no such
        prediction. Read together, so that when the body says the prediction ended,
        every event it had is there (events are refused once it ended)."""
        return cast("EventsRead | None", await self._enqueue(self._event_reads, (prediction_id, after)))

    def _enqueue(self, bucket: list[tuple[Any, asyncio.Future[Any]]], item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        bucket.append((item, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After the callbacks already due this turn: the requests that arrived
            # together join this flush.
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        submits, self._submits = self._submits, []
        fetches, self._fetches = self._fetches, []
        rates, self._rates = self._rates, []
        event_reads, self._event_reads = self._event_reads, []
        if submits and (fetches or rates or event_reads) and self._wait_replicas:
            # WAIT holds back the replies after it on its connection: reads go on another.
            self._spawn(self._flush(submits, [], []))
            self._spawn(self._flush([], fetches, rates, event_reads))
        else:
            self._spawn(self._flush(submits, fetches, rates, event_reads))

    def _spawn(self, flush: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(flush)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(
        self,
        submits: list[tuple[Submission, asyncio.Future[Any]]],
        fetches: list[tuple[str, asyncio.Future[Any]]],
        rates: list[tuple[tuple[str, float], asyncio.Future[Any]]],
        event_reads: Sequence[tuple[tuple[str, str], asyncio.Future[Any]]] = (),
    ) -> None:
        waits = bool(submits) and self._wait_replicas > 0
        try:
            keys, args = self._submit_call([s for s, _ in submits]) if submits else ([], [])
            rate_keys, rate_args = self._rate_call([r for r, _ in rates])
            async with self._redis.pipeline(transaction=False) as pipe:
                if submits:
                    pipe.evalsha(script("submit").sha, len(keys), *keys, *args)
                    if waits:
                        pipe.execute_command("WAIT", self._wait_replicas, int(self._wait_timeout * 1000))
                for prediction_id, _ in fetches:
                    pipe.hmget(self.keys.prediction(prediction_id), READ_FIELDS)
                for (prediction_id, after), _ in event_reads:
                    pipe.hmget(self.keys.prediction(prediction_id), READ_FIELDS)
                    pipe.xrange(self.keys.events(prediction_id), f"({after}" if after else "-", "+", EVENTS_PER_READ)
                if rates:  # last: its reply is taken from the end
                    pipe.evalsha(script("rate").sha, len(rate_keys), *rate_keys, *rate_args)
                replies = list(await self._bounded(pipe.execute(raise_on_error=False), waits))
            if submits and isinstance(replies[0], NoScriptError):
                if waits:
                    replies[:2] = await self._submit_loading_script(keys, args)
                else:
                    replies[0] = await self._eval(script("submit"), keys, args)
            if rates and isinstance(replies[-1], NoScriptError):
                replies[-1] = await self._eval(script("rate"), rate_keys, rate_args)
        except _UNREACHABLE as exc:
            failure = exc if isinstance(exc, RedisUnavailable) else RedisUnavailable(f"Redis is unreachable: {exc}")
            for _, future in [*submits, *fetches, *rates, *event_reads]:
                _settle(future, error=failure)
            return
        except BaseException as exc:
            for _, future in [*submits, *fetches, *rates, *event_reads]:
                _settle(future, error=exc)
            raise
        if rates:
            waited = replies.pop()
            for (_, future), wait in zip(rates, waited if not isinstance(waited, Exception) else [waited] * len(rates)):
                if isinstance(wait, Exception):
                    _settle(future, error=wait)
                else:
                    _settle(future, float(wait))
        # A caller may have given up meanwhile (its request was canceled): its future is
        # done, and the others of the flush still get their answers.
        position = 0
        if submits:
            position = 2 if waits else 1
            await self._settle_submits(submits, replies[0], replies[1] if waits else None)
        for (_, future), reply in zip(fetches, replies[position:]):
            if isinstance(reply, Exception):
                _settle(future, error=reply)
            else:
                _settle(future, read_prediction(reply))
        position += len(fetches)
        for j, (_, future) in enumerate(event_reads):
            state, stored = replies[position + 2 * j], replies[position + 2 * j + 1]
            error = next((r for r in (state, stored) if isinstance(r, Exception)), None)
            if error is not None:
                _settle(future, error=error)
            else:
                _settle(future, events_read(state, stored))

    async def _submit_loading_script(self, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """The submit script (loaded first: Redis lost its scripts) and WAIT, on one connection."""
        submit = script("submit")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.script_load(submit.source)
            pipe.evalsha(submit.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self._wait_replicas, int(self._wait_timeout * 1000))
            return list(await self._bounded(pipe.execute(raise_on_error=False), True))[1:]

    async def _settle_submits(
        self, submits: list[tuple[Submission, asyncio.Future[Any]]], reply: Any, acked: Any
    ) -> None:
        """Answer each submit from the script's reply and, with ``wait_replicas``, WAIT's."""
        if isinstance(reply, Exception):
            for _, future in submits:
                _settle(future, error=reply)
            return
        flags, queued = reply
        failure: Exception | None = None
        if self._wait_replicas and (isinstance(acked, Exception) or int(acked) < self._wait_replicas):
            accepted = [s for (s, _), flag in zip(submits, flags) if flag == _ACCEPTED]
            held = f"WAIT failed ({acked})" if isinstance(acked, Exception) else f"{acked} replicas hold it"
            failure = NotReplicated(
                f"Not accepted: {self._wait_replicas} replicas must hold a prediction within "
                f"{self._wait_timeout:g}s, and {held}; {len(accepted)} canceled"
            )
            await self._withdraw(accepted)
        for (submit, future), flag in zip(submits, flags):
            if isinstance(flag, bytes):
                # An Idempotency-Key seen before: '=<id>' the same request, '!<id>' another.
                if flag.startswith(b"="):
                    _settle(future, (_ACCEPTED, int(queued), flag[1:].decode()))
                else:
                    _settle(future, error=IdempotencyKeyReused())
            elif flag == _ACCEPTED and failure is not None:
                _settle(future, error=failure)
            else:
                _settle(future, (int(flag), int(queued), submit.prediction_id))

    async def _withdraw(self, submits: Sequence[Submission]) -> None:
        """Cancel predictions whose clients are told they were not accepted, so that none
        runs unseen (if the primary is gone too, a failover loses them anyway), and forget
        their idempotency keys, so that a retry queues the request anew."""
        for submit in submits:
            try:
                await self.cancel(submit.prediction_id)
                if submit.idempotency is not None:
                    await self._bounded(self._redis.delete(self.keys.idempotency(submit.idempotency.digest)))
            except _UNREACHABLE_OR_GONE as exc:
                logger.warning("Could not cancel prediction %s that missed its replicas: %s", submit.prediction_id, exc)

    def _submit_call(self, submits: Sequence[Submission]) -> tuple[list[str], list[Any]]:
        return submit_call(
            self.keys, submits, limit=self._limit, ttl_s=self._ttl, admitted_per_worker=self._admitted_per_worker
        )

    # -- the rest ----------------------------------------------------------------------
    async def _bounded(self, call: Awaitable[T], waits: bool = False) -> T:
        """``call``, or ``RedisUnavailable`` if Redis does not answer in time or at all
        (given the time of its ``WAIT`` as well when it ``waits`` for replicas)."""
        try:
            return await asyncio.wait_for(call, self._timeout + (self._wait_timeout if waits else 0.0))
        except _NO_ANSWER as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc or 'no answer in time'}") from exc

    async def _eval(self, to_run: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._bounded(self._redis.evalsha(to_run.sha, len(keys), *keys, *args))
        except NoScriptError:
            await self._bounded(self._redis.script_load(to_run.source))
            return await self._bounded(self._redis.evalsha(to_run.sha, len(keys), *keys, *args))

    async def cancel(self, prediction_id: str) -> bytes:
        """Cancel the prediction unless it ended; returns its body afterwards."""
        body = await self._eval(
            script("cancel"),
            [
                self.keys.prediction(prediction_id),
                self.keys.queue,
                self.keys.queued,
                self.keys.webhooks,
                self.keys.metrics,
            ],
            [
                prediction_id,
                now_iso(),
                self._ttl,
                self.keys.done_channel,
                self.keys.stop_channel,
                self._admitted_per_worker,
            ],
        )
        if body is None:
            raise PredictionNotFound(prediction_id)
        return cast(bytes, body)

    async def fetch_file(self, name: str) -> tuple[str, bytes, str | None] | None:
        """An output file's media type, bytes and API key owner (that of its prediction),
        while its prediction is readable and succeeded."""
        prediction, mime_type, data = await self._bounded(
            self._redis.hmget(self.keys.file(name), [FILE.prediction, FILE.media_type, FILE.data])
        )
        if not isinstance(prediction, bytes) or not isinstance(data, bytes):
            return None
        result, owner = await self._bounded(
            self._redis.hmget(self.keys.prediction(prediction.decode()), ["result", "owner"])
        )
        if not isinstance(result, bytes) or json.loads(result).get("status") != "success":
            return None
        media_type = (mime_type if isinstance(mime_type, bytes) else b"application/octet-stream").decode()
        return media_type, data, owner.decode() if isinstance(owner, bytes) else None

    async def api_key(self, key_id: str) -> ApiKey | None:
        """The record of API key ``key_id`` (None if there is none)."""
        raw = await self._bounded(self._redis.hget(self.keys.api_keys, key_id))
        return ApiKey.from_json(raw) if raw is not None else None

    async def take_request(self, key_id: str, rps: float) -> float:
        """Count one request of API key ``key_id`` against its ``rps`` (bursts of as many):
        0 if it may go, else the seconds until it may. The requests of one turn of the
        event loop are counted together, in one script call."""
        return cast(float, await self._enqueue(self._rates, (key_id, rps)))

    def _rate_call(self, requests: Sequence[tuple[str, float]]) -> tuple[list[str], list[float]]:
        keys, args = [], []
        for key_id, rps in requests:
            keys.append(self.keys.rate(key_id))
            args += [rps, max(1.0, rps)]
        return keys, args

    async def owner(self, prediction_id: str) -> str | None:
        """The API key owner the prediction was created for (None: no such prediction,
        or created without a key)."""
        found = await self._bounded(self._redis.hget(self.keys.prediction(prediction_id), "owner"))
        return found.decode() if isinstance(found, bytes) else None

    async def ping(self) -> None:
        await self._bounded(self._redis.ping())

    async def queued_inputs(self) -> int:
        return int(await self._bounded(self._redis.get(self.keys.queued)) or 0)

    async def snapshot(self) -> Snapshot:
        """Queue depth, metrics, live workers and waiting webhook events, in two round trips."""
        async with self._redis.pipeline(transaction=False) as pipe:
            ask_snapshot(pipe, self.keys)
            first = await self._bounded(pipe.execute())
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in first[2]:
                pipe.hgetall(self.keys.worker(worker_id.decode()))
            found = await self._bounded(pipe.execute())
        return make_snapshot(first, found)

    async def workers(self) -> list[WorkerInfo]:
        ids = cast("list[bytes]", await self._bounded(self._redis.zrange(self.keys.workers, 0, -1)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(self.keys.worker(worker_id.decode()))
            found = await self._bounded(pipe.execute())
        return live_workers(ids, found)


def submit_call(
    keys: Keys, submits: Sequence[Submission], *, limit: int, ttl_s: int, admitted_per_worker: int = 64
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of the submit script accepting ``submits``."""
    names = [keys.queue, keys.queued]
    args: list[Any] = [now_iso(), limit, ttl_s, admitted_per_worker]
    for submit in submits:
        key = keys.prediction(submit.prediction_id)
        idempotency = submit.idempotency
        names += [key, keys.idempotency(idempotency.digest) if idempotency else key]
        args += [submit.prediction_id, submit.total_inputs, len(submit.chunks), submit_options_arg(submit)]
        for chunk in submit.chunks:
            args += [chunk.start, chunk.count, chunk.group, chunk.data]
    return names, args


def submit_options_arg(submit: Submission) -> str:
    """What a prediction asks for besides its inputs, as the submit script reads it: ""
    for a plain one (the most common submit; packing seven more arguments per prediction
    cost the API about 5 % of its CPU in bench (b)), else a JSON list."""
    idempotency = submit.idempotency
    options = [
        submit.webhook_url,
        submit.webhook_events,
        idempotency.fingerprint if idempotency else "",
        submit.owner,
        submit.owner_limit,
        submit.deadline_ms,
        submit.priority,
        # A prediction with an owner always names a tenant in its entries: finish.lua
        # releases the owner's count of queued inputs only for those.
        tenant_token(submit.tenant or submit.owner),
    ]
    if options == _PLAIN_OPTIONS:
        return ""
    return json.dumps(options, ensure_ascii=False)  # (an owner's name as is: cjson passes UTF-8 through)


#: The options submit.lua assumes when a prediction's options argument is "".
_PLAIN_OPTIONS = ["", "", "", "", 0, 0, "normal", NO_TENANT]


def tenant_token(tenant: str) -> str:
    """A tenant's name as it may appear in a key: itself when it is a plain word, else its
    digest; ``NO_TENANT`` for the one tenant of a server without API keys."""
    if not tenant:
        return NO_TENANT
    if len(tenant) <= 64 and tenant.replace("-", "").replace("_", "").isalnum() and tenant.isascii():
        return tenant
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


def _settle(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Answer a caller of a shared flush, unless it stopped waiting (its future is done)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
