"""Wakes requests waiting for predictions to end (``?wait=`` and ``POST /predict``).

One subscription per API process to the channel on which workers announce ended
predictions; each waiting request registers an event for its prediction id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import redis.asyncio

from tungstenkit._queue import CONNECTION_ERRORS

logger = logging.getLogger(__name__)


class CompletionWaiter:
    def __init__(self, client: redis.asyncio.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._events: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()

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
                    if message is None or message["type"] != "message":
                        continue
                    for prediction_id in message["data"].decode().split():
                        for event in self._events.get(prediction_id, ()):
                            event.set()
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
