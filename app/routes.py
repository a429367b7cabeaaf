"""The REST endpoints. Handlers stay thin: parse, call the queue, answer."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tungstenkit._fetch import Allowlist
from tungstenkit._queue import AsyncPredictionQueue, Fetched, Idempotency, split_into_chunks
from tungstenkit._settings import Settings
from tungstenkit._webhook_protocol import WebhookRequest
from tungstenkit.app.access import AccessControl, authorize, not_found
from tungstenkit.app.admission import BodyBudget
from tungstenkit.app.demo import root
from tungstenkit.app.error_responses import ClientGone, Draining, InvalidInput, SyncTimeout
from tungstenkit.app.events import EventStream, parse_last_event_id, wants_events
from tungstenkit.app.health import health
from tungstenkit.app.inputs import InputParser
from tungstenkit.app.memory import AfterBursts
from tungstenkit.app.request_body import read_body, require_json
from tungstenkit.app.served_files import get_file
from tungstenkit.app.submit_options import REPLAYED_HEADER, SubmitOptions, query_of
from tungstenkit.app.tenancy import tenant_of
from tungstenkit.app.waiters import CompletionWaiter

logger = logging.getLogger(__name__)

_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
#: How often a waiting request re-reads its prediction in case an announcement was missed.
_RECHECK_S = 2.0


@dataclass
class ServingContext:
    """What the handlers share, kept on ``app.state.serving``."""

    settings: Settings
    queue: AsyncPredictionQueue
    waiter: CompletionWaiter
    parser: InputParser
    chunk_size: int
    metadata: dict[str, Any]
    #: Set when the process is stopping: new predictions get 503, waits return early.
    draining: bool = False
    #: Where webhooks may point although not public (``url_allowlist``).
    webhook_allowlist: Allowlist = field(default_factory=Allowlist)
    #: Request body bytes this process holds (``max_buffered_bytes``).
    bodies: BodyBudget = field(default_factory=lambda: BodyBudget(0, 0))
    #: Validates large bodies off the event loop. One thread: validation holds the GIL
    #: anyway, and one at a time bounds the memory that parsing adds to the bodies held.
    validation: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation")
    )
    #: API keys (``api_keys``); None when they are off and every request may do anything.
    access: AccessControl | None = None
    after_bursts: AfterBursts = field(init=False)

    def __post_init__(self) -> None:
        self.after_bursts = AfterBursts(lambda: self.bodies.held)

    def start_draining(self) -> None:
        self.draining = True
        self.waiter.release_all()


def _context(request: Request) -> ServingContext:
    serving: ServingContext = request.app.state.serving
    return serving


def new_prediction_id() -> str:
    """128 random bits as 32 hex characters: unguessable, like a uuid4 but all random."""
    return secrets.token_hex(16)


def _json(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def is_prediction_id(text: str) -> bool:
    """Whether ``text`` is an id as ``new_prediction_id`` makes them, and nothing more (no newline)."""
    return _ID_PATTERN.fullmatch(text) is not None


def _prediction_id(request: Request) -> str:
    prediction_id: str = request.path_params["prediction_id"]
    if not is_prediction_id(prediction_id):
        raise not_found(prediction_id)
    return prediction_id


async def _visible_prediction_id(context: ServingContext, request: Request, scope: str) -> str:
    """The path's prediction id, once the caller's key allows ``scope`` on it: another
    owner's prediction is as unknown as an id that never existed."""
    caller = await authorize(request, scope) if context.access is not None else None
    prediction_id = _prediction_id(request)
    if caller is not None and context.access is not None:
        await context.access.check_owner(caller, prediction_id)
    return prediction_id


@dataclass(frozen=True)
class Submitted:
    prediction_id: str
    #: The request's Idempotency-Key came with the same request before: nothing new was queued.
    replayed: bool = False
    #: The request carried an Idempotency-Key (its client means to retry it).
    idempotent: bool = False


async def _submit(context: ServingContext, request: Request) -> Submitted:
    # (no coroutine at all with keys off: this is every submit)
    caller = await authorize(request, "predict") if context.access is not None else None
    if context.draining:
        raise Draining(
            "This server is shutting down; retry (another instance may take the request)", headers={"Retry-After": "1"}
        )
    require_json(request)
    query = query_of(request)
    webhook = WebhookRequest.parse(query.get("webhook"), query.get("webhook_events"), context.webhook_allowlist)
    options = SubmitOptions.parse(request)
    body = await read_body(request, context.settings.max_body_bytes, context.bodies, context.parser.shape_guard)
    large = body.large  # (release() empties the body)
    try:
        try:
            if large:
                loop = asyncio.get_running_loop()
                inputs, groups = await loop.run_in_executor(context.validation, context.parser.parse, body.data)
            else:
                inputs, groups = context.parser.parse(body.data)
        finally:
            body.release()
        prediction_id = new_prediction_id()
        chunks = split_into_chunks(inputs, groups, context.chunk_size)
        webhook_url, webhook_events = (webhook.url, webhook.events) if webhook else ("", ())
        idempotency = None
        if options.idempotency_key is not None:
            # What makes a request the same request: its inputs and every parameter.
            parts = [str(len(inputs)), *inputs, webhook_url, " ".join(webhook_events), *options.fingerprint()]
            idempotency = Idempotency.of(tenant_of(request), options.idempotency_key, parts)
        served_by = await context.queue.submit(
            prediction_id,
            chunks,
            len(inputs),
            webhook_url,
            webhook_events,
            idempotency,
            owner=caller.owner if caller else "",
            owner_limit=caller.max_queued if caller else 0,
            deadline_ms=options.deadline_ms,
            priority=options.priority,
            tenant=tenant_of(request),
        )
    finally:
        # Only now is the body's memory (the parsed and the encoded inputs) free: a
        # collection that ran while the submit held it would leave it to the next one,
        # which an idle server may not run for hours.
        if large:
            context.after_bursts.large_body_done()
    if served_by != prediction_id:
        return Submitted(served_by, replayed=True, idempotent=True)
    context.waiter.accepted(prediction_id)
    if caller is not None and context.access is not None:
        context.access.created(prediction_id, caller)
    return Submitted(prediction_id, idempotent=idempotency is not None)


async def _read(context: ServingContext, prediction_id: str) -> Fetched | None:
    """The prediction as it stands: from what this process heard, else from Redis."""
    body = context.waiter.ended_body(prediction_id)
    if body is not None:
        return Fetched(body, True)
    return await context.queue.fetch(prediction_id)


async def _wait(context: ServingContext, prediction_id: str, wait_s: float) -> Fetched | None:
    """The prediction once it ended, or as it stands after ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    waiter = context.waiter
    with waiter.watch(prediction_id) as ended:
        # A prediction this process accepted and has not heard end is open: no need to
        # read it before waiting (a missed announcement is caught by the recheck).
        fetched = None if waiter.known_open(prediction_id) else await _read(context, prediction_id)
        while fetched is None or not fetched.ended:
            if fetched is None and not waiter.known_open(prediction_id):
                return None
            remaining = deadline - loop.time()
            if remaining <= 0 or context.draining:
                break
            try:
                await asyncio.wait_for(ended.wait(), min(remaining, _RECHECK_S))
            except asyncio.TimeoutError:
                pass
            ended.clear()
            fetched = await _read(context, prediction_id)
    return fetched if fetched is not None else await _read(context, prediction_id)


def _wait_seconds(request: Request, limit: float) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects NaN
        raise InvalidInput(
            [{"loc": ["query", "wait"], "msg": "wait must be a number of seconds >= 0", "type": "value_error"}]
        )
    return min(value, limit)


def _replayed(submitted: Submitted) -> dict[str, str] | None:
    return {REPLAYED_HEADER: "true"} if submitted.replayed else None


async def create_prediction(request: Request) -> Response:
    context = _context(request)
    stream = _stream_flag(request)
    submitted = await _submit(context, request)
    if stream:
        headers = {"X-Prediction-Id": submitted.prediction_id, **(_replayed(submitted) or {})}
        return await _events(context, submitted.prediction_id, "", headers)
    if submitted.replayed:
        return JSONResponse({"prediction_id": submitted.prediction_id}, headers=_replayed(submitted))
    # A new id is 32 hex digits (new_prediction_id): its body needs no JSON encoder.
    return _json(b'{"prediction_id":"%s"}' % submitted.prediction_id.encode())


def _stream_flag(request: Request) -> bool:
    raw = query_of(request).get("stream", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput([{"loc": ["query", "stream"], "msg": "stream must be true or false", "type": "value_error"}])
    return raw in ("true", "1")


async def _events(
    context: ServingContext, prediction_id: str, last_id: str, headers: dict[str, str] | None = None
) -> Response:
    stream = EventStream(context, prediction_id, last_id)
    first = await stream.first_read()
    if first is None:
        raise not_found(prediction_id)
    return stream.response(first, headers)


async def prediction_events(request: Request) -> Response:
    """The prediction's events (``text/event-stream``), from after ``Last-Event-ID``."""
    context = _context(request)
    prediction_id = await _visible_prediction_id(context, request, "read")
    last_id = parse_last_event_id(request.headers.get("last-event-id", request.query_params.get("last_event_id")))
    return await _events(context, prediction_id, last_id)


async def get_prediction(request: Request) -> Response:
    if wants_events(request.headers.get("accept", "")):
        return await prediction_events(request)
    context = _context(request)
    prediction_id = await _visible_prediction_id(context, request, "read")
    wait_s = _wait_seconds(request, context.settings.max_wait_s)
    fetched = await (_wait(context, prediction_id, wait_s) if wait_s > 0 else _read(context, prediction_id))
    if fetched is None:
        raise not_found(prediction_id)
    return _json(fetched.body)


async def cancel_prediction(request: Request) -> Response:
    context = _context(request)
    return _json(await context.queue.cancel(await _visible_prediction_id(context, request, "predict")))


async def _disconnected(request: Request) -> None:
    """Returns when the client closes its connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_unless_gone(
    context: ServingContext, request: Request, prediction_id: str, wait_s: float
) -> Fetched | None:
    """``_wait``, but if the client leaves first, cancel the prediction: nobody will read
    it, and its work would hold a worker for nothing."""
    waiting = asyncio.ensure_future(_wait(context, prediction_id, wait_s))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()
    if waiting.done() and not waiting.cancelled():
        return waiting.result()
    logger.info("The client of POST /predict left before prediction %s ended: canceling it", prediction_id)
    await context.queue.cancel(prediction_id)
    raise ClientGone("The client closed the connection before the prediction ended")


async def predict_sync(request: Request) -> Response:
    context = _context(request)
    submitted = await _submit(context, request)
    prediction_id = submitted.prediction_id
    timeout = context.settings.sync_timeout_s
    if context.settings.cancel_on_disconnect and not submitted.idempotent:
        fetched = await _wait_unless_gone(context, request, prediction_id, timeout)
    else:
        fetched = await _wait(context, prediction_id, timeout)
    if fetched is None or not fetched.ended:
        raise SyncTimeout(
            {
                "message": f"The prediction did not finish within {timeout:g}s; poll GET /predictions/{prediction_id}",
                "prediction_id": prediction_id,
            }
        )
    response = _json(fetched.body)
    response.headers.update(_replayed(submitted) or {})
    return response


ROUTES = [
    # JSON for API clients, the demo page for browsers (Accept: text/html).
    Route("/", root, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/predictions", create_prediction, methods=["POST"]),
    Route("/predictions/{prediction_id}", get_prediction, methods=["GET"]),
    Route("/predictions/{prediction_id}/events", prediction_events, methods=["GET"]),
    # The seed's example cancels with GET, so both methods are answered.
    Route("/predictions/{prediction_id}/cancel", cancel_prediction, methods=["POST", "GET"]),
    Route("/predict", predict_sync, methods=["POST"]),
    Route("/files/{name}", get_file, methods=["GET"]),
]
