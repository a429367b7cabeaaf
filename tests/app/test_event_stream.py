"""One event stream against the announcements its API process hears (no server: the
waiter is fed as its listener would feed it)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tungstenkit._queue import EventsRead, Fetched
from tungstenkit.app.events import EventStream
from tungstenkit.app.waiters import CompletionWaiter

CREATED = "2026-12-05T00:00:00.000000Z"


def _read(started: str | None) -> EventsRead:
    return EventsRead(Fetched(b'{"status":"running"}', False), CREATED, started, [])


class _Reads:
    """The queue's ``read_events``: the prediction pending at the first read, started after."""

    def __init__(self) -> None:
        self.count = 0

    async def read_events(self, prediction_id: str, after: str = "") -> EventsRead:
        self.count += 1
        return _read(None if self.count == 1 else "2026-12-05T00:00:01.000000Z")


def _stream(prediction_id: str) -> tuple[CompletionWaiter, _Reads, EventStream]:
    """A stream of ``prediction_id`` from its start, with the waiter and reads it uses
    (the waiter's client is never used: nothing here subscribes)."""
    waiter = CompletionWaiter(client=Any, channel="done", result_ttl_s=60, events_channel="events")  # type: ignore[arg-type]
    reads = _Reads()
    context = SimpleNamespace(queue=reads, waiter=waiter, settings=SimpleNamespace(max_stream_s=0.0), draining=False)
    return waiter, reads, EventStream(context, prediction_id, "")  # type: ignore[arg-type]


def test_a_start_announced_between_the_first_read_and_the_watch_is_not_missed() -> None:
    # The route reads the prediction before answering (to 404 an unknown id); the stream
    # watches it only once the response begins. A start heard in between woke nobody: the
    # stream must read again at once, not at its keep-alive 15 s later.
    async def scenario() -> None:
        waiter, reads, stream = _stream("p1")
        first = await stream.first_read()
        assert first is not None and first.started is None
        waiter._heard_events(b"p1")  # the start script's announcement, as the listener takes it in
        frames = stream._frames(first)
        assert b"event: queued" in await frames.__anext__()
        assert b"event: start" in await asyncio.wait_for(frames.__anext__(), 2)
        assert reads.count == 2
        await frames.aclose()

    asyncio.run(scenario())


def test_a_stream_without_announcements_in_between_does_not_read_again() -> None:
    async def scenario() -> None:
        waiter, reads, stream = _stream("p1")
        first = await stream.first_read()
        assert first is not None
        frames = stream._frames(first)
        assert b"event: queued" in await frames.__anext__()
        waiting = asyncio.ensure_future(frames.__anext__())
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        assert not done and reads.count == 1  # it waits on the subscription, reading nothing
        waiter._heard_events(b"p1")
        assert b"event: start" in await asyncio.wait_for(waiting, 2)
        await frames.aclose()

    asyncio.run(scenario())
