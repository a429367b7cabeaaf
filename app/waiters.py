"""What this API process learns from the ``done`` channel, and the requests waiting on it.

One subscription per API process to the channel on which workers announce ended
predictions. Each announcement carries the prediction's finished body when it is small,
so a request waiting for it (``?wait=``, ``POST /predict``) answers without reading
Redis again, and so does a later GET while the body is remembered.

The subscription lives as long as the process: whatever breaks it (Redis restarting,
refusing, or a connection that goes silent without an error) is logged and it is made
again, with backoff. Meanwhile waiting requests fall back to reading Redis every
couple of seconds (see ``routes``), slower but correct.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import redis.asyncio

from tungstenkit._queue import REDIS_ERRORS, parse_done_message
from tungstenkit._supervised_thread import EXIT_THREAD_FAILED

logger = logging.getLogger(__name__)

#: Bytes of ended bodies kept for later GETs.
REMEMBERED_BYTES = 32 * 1024 * 1024
#: Predictions tracked as accepted here but not heard to end, and as heard to end
#: (beyond these, the oldest are forgotten, which only costs a Redis read).
TRACKED_IDS = 100_000
#: The listener pings Redis when nothing arrived for this long, and replaces its
#: connection when it heard nothing at all (not even a pong) for ``SILENCE_S``.
PING_S = 2.0
SILENCE_S = 3 * PING_S


class CompletionWaiter:
    def __init__(
        self, client: redis.asyncio.Redis, channel: str, result_ttl_s: float, events_channel: str | None = None
    ) -> None:
        self._client = client
        self._channel = channel
        #: Where workers announce predictions with new events (event streams wait on it,
        #: on the same subscription).
        self._events_channel = events_channel
        # Forget a body a little before Redis does, so an expired prediction reads 404.
        self._remember_s = max(0.0, result_ttl_s - 1)
        self._events: dict[str, set[asyncio.Event]] = {}
        #: The event streams' watchers (woken by the events channel as well).
        self._streams: dict[str, set[asyncio.Event]] = {}
        self._ended: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._ended_bytes = 0
        self._open: OrderedDict[str, None] = OrderedDict()
        self.connected = asyncio.Event()
        #: Announcements taken in since the start (each may end several predictions).
        self.heard_count = 0
        #: Moves with every announcement heard (of ends and of events) and every wake of
        #: all watchers: a reader that read a prediction before it began to watch it
        #: reads again if this moved in between (what it heard there woke nobody).
        self.generation = 0

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
    def watch(self, prediction_id: str, events: bool = False) -> Iterator[asyncio.Event]:
        """An event set when the prediction is announced as ended, and when the
        subscription was made again (announcements may have been missed). With
        ``events`` (an event stream), also when it started or has new events; long-polls
        are not woken by those, which would only make them read again."""
        watchers = self._streams if events else self._events
        event = asyncio.Event()
        watchers.setdefault(prediction_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = watchers.get(prediction_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del watchers[prediction_id]

    def release_all(self) -> None:
        """Wake every waiting request (the process is stopping)."""
        self.generation += 1
        for watchers in (self._events, self._streams):
            for events in watchers.values():
                for event in events:
                    event.set()

    def _heard_events(self, data: bytes) -> None:
        self.generation += 1
        for prediction_id in data.split():
            for event in self._streams.get(prediction_id.decode(), ()):
                event.set()

    def _heard(self, data: bytes) -> None:
        self.heard_count += 1
        self.generation += 1
        for prediction_id, body in parse_done_message(data):
            self._open.pop(prediction_id, None)
            self._remember(prediction_id, body)
            for watchers in (self._events, self._streams):
                for event in watchers.get(prediction_id, ()):
                    event.set()

    def start(self) -> asyncio.Task[None]:
        """Run the listener as a task of the running loop. It handles every failure
        itself; should it end all the same, the process ends (non-zero) so that its
        supervisor starts a fresh one, rather than serving on without it."""
        task = asyncio.get_running_loop().create_task(self.run(), name="completion-waiter")
        task.add_done_callback(_listener_ended)
        return task

    async def run(self) -> None:
        delay = 0.1

        def alive() -> None:
            nonlocal delay
            delay = 0.1

        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [self._channel] + ([self._events_channel] if self._events_channel else [])
                await pubsub.subscribe(*channels)
                if self.connected.is_set() is False:
                    self.release_all()  # what happened while unsubscribed was not heard: read again
                self.connected.set()
                await self._listen(pubsub, alive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                if isinstance(exc, REDIS_ERRORS):
                    logger.warning(
                        "Lost the completion channel (%s: %s); resubscribing in %.1fs", type(exc).__name__, exc, delay
                    )
                else:
                    logger.exception("The completion listener failed; resubscribing in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _listen(self, pubsub: Any, alive: Callable[[], None]) -> None:
        """Read announcements until the connection fails or goes silent."""
        clock = asyncio.get_running_loop().time
        heard_at = pinged_at = clock()
        while True:
            message = await pubsub.get_message(timeout=PING_S)
            now = clock()
            if message is not None:
                heard_at = now
                alive()
                if message["type"] == "message":
                    if self._events_channel is not None and message["channel"] == self._events_channel.encode():
                        self._heard_events(message["data"])
                    else:
                        self._heard(message["data"])
            if now - heard_at > SILENCE_S:
                raise ConnectionError(f"nothing heard from Redis for {now - heard_at:.0f}s")
            if now - heard_at >= PING_S and now - pinged_at >= PING_S:
                await pubsub.ping()
                pinged_at = now


def _listener_ended(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return  # the process is stopping
    logger.critical(
        "The completion listener ended; ending the API process (code %d) so that it is restarted",
        EXIT_THREAD_FAILED,
        exc_info=task.exception(),
    )
    logging.shutdown()
    os._exit(EXIT_THREAD_FAILED)
