"""A prediction's events as server-sent events (``text/event-stream``).

``queued``, ``start`` and ``completed`` are made from the prediction's hash when a
client reads them; ``output``, ``progress`` and ``log`` come from its events stream in
Redis (see ``tungstenkit._queue``), whose ids are the events' ids. So a client that
reconnects with ``Last-Event-ID``, to this API process or another, gets exactly the
events after it. Streams hold no Redis connection while they wait: they wait on the
process's one subscription (``CompletionWaiter``), which hears of predictions that
started, got new events or ended, and their reads share round trips.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.responses import Response, StreamingResponse

from tungstenkit._errors import RedisUnavailable
from tungstenkit._queue import EVENTS_PER_READ, EventsRead
from tungstenkit.app.error_responses import HTTPError

if TYPE_CHECKING:
    from tungstenkit.app.routes import ServingContext

logger = logging.getLogger(__name__)

#: The ids of the events that are not stored: they sort before every stored one
#: (``ms-seq`` ids from Redis), and ``completed`` after all of them.
QUEUED_ID, START_ID, COMPLETED_ID = "0-1", "0-2", "done"
#: A comment line this often keeps proxies from closing an idle stream.
KEEP_ALIVE_S = 15.0
MEDIA_TYPE = "text/event-stream"
_STORED_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class InvalidLastEventId(HTTPError):
    status_code = 400


def wants_events(accept: str) -> bool:
    """Whether an ``Accept`` header asks for ``text/event-stream``."""
    return MEDIA_TYPE in accept.lower()


def parse_last_event_id(raw: str | None) -> str:
    """The id a reconnecting client saw last ("" for none); 400 if this server never sent it."""
    if raw is None or raw.strip() == "":
        return ""
    raw = raw.strip()
    if raw in (QUEUED_ID, START_ID, COMPLETED_ID) or _STORED_ID.fullmatch(raw):
        return raw
    raise InvalidLastEventId("Last-Event-ID is not the id of an event of this stream")


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def frame(kind: str, event_id: str, data: bytes) -> bytes:
    """One event in the ``text/event-stream`` format (data spread over ``data:`` lines)."""
    lines = b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    return b"id: " + event_id.encode() + b"\nevent: " + kind.encode() + b"\n" + lines + b"\n"


class EventStream:
    """One client's stream of one prediction, from after ``last_id``."""

    def __init__(self, context: ServingContext, prediction_id: str, last_id: str) -> None:
        self._context = context
        self._id = prediction_id
        self._queued_sent = last_id != ""
        self._start_sent = last_id not in ("", QUEUED_ID)
        self._after = last_id if last_id and _STORED_ID.fullmatch(last_id) and _order(last_id) > (0, 2) else ""
        self._done = last_id == COMPLETED_ID
        self._read_at_generation = -1  # (set by first_read)

    async def first_read(self) -> EventsRead | None:
        """The first read (None: no such prediction), made before answering so that an
        unknown id gets a 404 rather than an empty stream."""
        self._read_at_generation = self._context.waiter.generation
        return await self._context.queue.read_events(self._id, self._after)

    def response(self, first: EventsRead, headers: dict[str, str] | None = None) -> Response:
        if self._done:
            # Nothing after ``completed``: 204 also tells an EventSource not to reconnect.
            return Response(status_code=204)
        return StreamingResponse(
            self._frames(first),
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )

    async def _frames(self, read: EventsRead | None) -> AsyncIterator[bytes]:
        context = self._context
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        limit = context.settings.max_stream_s
        close_at = sent_at + limit if limit > 0 else float("inf")
        with context.waiter.watch(self._id, events=True) as woken:
            if context.waiter.generation != self._read_at_generation:
                # Announcements came between the first read and the watch (the start of a
                # batch that took it, say): they woke nobody, so read again at once.
                woken.set()
            while True:
                if read is None:
                    return  # it expired meanwhile
                chunk = self._frames_of(read)
                if chunk:
                    yield chunk
                    sent_at = loop.time()
                if read.fetched.ended and len(read.events) < EVENTS_PER_READ:
                    yield frame("completed", COMPLETED_ID, read.fetched.body)
                    return
                if len(read.events) < EVENTS_PER_READ:
                    # Woken when the prediction starts, has new events or ends; else it is
                    # read again with each keep-alive, in case an announcement was missed.
                    try:
                        await asyncio.wait_for(
                            woken.wait(), min(KEEP_ALIVE_S - (loop.time() - sent_at), close_at - loop.time())
                        )
                    except asyncio.TimeoutError:
                        pass
                    if context.draining or loop.time() >= close_at:
                        return  # the client reconnects (to another process) with Last-Event-ID
                    if loop.time() - sent_at >= KEEP_ALIVE_S - 0.01:
                        yield b": keep-alive\n\n"
                        sent_at = loop.time()
                woken.clear()
                try:
                    read = await context.queue.read_events(self._id, self._after)
                except RedisUnavailable as exc:
                    # The headers are sent: end the stream; the client resumes with Last-Event-ID.
                    logger.warning("Ended the event stream of prediction %s: %s", self._id, exc)
                    return

    def _frames_of(self, read: EventsRead) -> bytes:
        out: list[bytes] = []
        if not self._queued_sent:
            queued = json.dumps({"id": self._id, "status": "pending", "created_at": read.created or None})
            out.append(frame("queued", QUEUED_ID, queued.encode()))
            self._queued_sent = True
        if not self._start_sent and (read.started or read.events):
            out.append(frame("start", START_ID, json.dumps({"started_at": read.started or None}).encode()))
            self._start_sent = True
        for event_id, kind, data in read.events:
            out.append(frame(kind, event_id, data))
            self._after = event_id
        return b"".join(out)
