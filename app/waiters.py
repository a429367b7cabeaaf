"""What this API process learns from the ``done`` channel, and the requests waiting on it.

One subscription per API process to the channel on which workers announce ended
predictions. Each announcement carries the prediction's finished body when it is small,
so a request waiting for it (``?wait=``, ``POST /predict``) answers without reading
Redis again, and so does a later GET while the body is remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator

import redis.asyncio

from tungstenkit._queue import CONNECTION_ERRORS, parse_done_message

logger = logging.getLogger(__name__)

#: Bytes of ended bodies kept for later GETs.
REMEMBERED_BYTES = 32 * 1024 * 1024
#: Predictions tracked as accepted here but not heard to end, and as heard to end
#: (beyond these, the oldest are forgotten, which only costs a Redis read).
TRACKED_IDS = 100_000


class CompletionWaiter:
    def __init__(self, client: redis.asyncio.Redis, channel: str, result_ttl_s: float) -> None:
        self._client = client
        self._channel = channel
        # Forget a body a little before Redis does, so an expired prediction reads 404.
        self._remember_s = max(0.0, result_ttl_s - 1)
        self._events: dict[str, set[asyncio.Event]] = {}
        self._ended: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._ended_bytes = 0
        self._open: OrderedDict[str, None] = OrderedDict()
        self.connected = asyncio.Event()

    # -- what this process knows -----------------------------------------------------
    def accepted(self, prediction_id: str) -> None:
        """This process created the prediction: it exists, and its end will be announced.

        The announcement may come before the submit's reply: then it is already over.
        """
        if prediction_id in self._ended:
            return
        self._open[prediction_id] = None
        if len(self._open) > TRACKED_IDS:
            self._open.popitem(last=False)

    def known_open(self, prediction_id: str) -> bool:
        return prediction_id in self._open

    def ended_body(self, prediction_id: str) -> bytes | None:
        """The body of a prediction heard to have ended, while it is readable."""
        found = self._ended.get(prediction_id)
        if found is None:
            return None
        until, body = found
        if time.monotonic() > until:
            return None
        return body

    def _remember(self, prediction_id: str, body: bytes | None) -> None:
        """Note an ended prediction, with its body when the announcement carried it."""
        if prediction_id in self._ended:
            return
        now = time.monotonic()
        self._ended[prediction_id] = (now + self._remember_s, body)
        self._ended_bytes += len(body or b"")
        while self._ended and (
            self._ended_bytes > REMEMBERED_BYTES
            or len(self._ended) > TRACKED_IDS
            or next(iter(self._ended.values()))[0] < now
        ):
            _, (_, old) = self._ended.popitem(last=False)
            self._ended_bytes -= len(old or b"")

    # -- waiting ---------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, prediction_id: str) -> Iterator[asyncio.Event]:
        """An event set when the prediction is announced as ended."""
        event = asyncio.Event()
        self._events.setdefault(prediction_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(prediction_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[prediction_id]

    def release_all(self) -> None:
        """Wake every waiting request (the process is stopping)."""
        for events in self._events.values():
            for event in events:
                event.set()

    def _heard(self, data: bytes) -> None:
        for prediction_id, body in parse_done_message(data):
            self._open.pop(prediction_id, None)
            self._remember(prediction_id, body)
            for event in self._events.get(prediction_id, ()):
                event.set()

    async def run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.connected.set()
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        self._heard(message["data"])
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self.connected.clear()
                logger.warning("Lost the completion channel (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
