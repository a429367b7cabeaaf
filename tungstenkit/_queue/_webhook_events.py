"""Webhook events on their way to becoming RQ jobs (the webhook worker's side, blocking)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from tungstenkit._queue._keys import Keys
from tungstenkit._queue._records import render_body, render_open
from tungstenkit._queue._wire import EVENT_KEYS


class _BlockingMove(Protocol):
    """``Redis.blmove`` with the timeout Redis accepts (seconds, fractions too)."""

    def __call__(self, first_list: str, second_list: str, timeout: float, src: str, dest: str) -> bytes | None: ...


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
        self._locks: dict[str, Lock] = {}

    def _lock(self, owner: str, ttl_ms: int) -> Lock:
        lock = self._locks.get(owner)
        if lock is None:
            lock = Lock(self._redis, self.keys.webhooks_lock, timeout=ttl_ms / 1000, thread_local=False)
            self._locks[owner] = lock
        return lock

    def hold_lock(self, owner: str, ttl_ms: int) -> bool:
        """Take or keep the dispatcher's lock; False while another process holds it.

        redis-py's ``Lock``: keeping and releasing it compare the owner and act in one
        atomic script, so an owner whose lock expired never touches its successor's.
        """
        lock = self._lock(owner, ttl_ms)
        if lock.local.token is not None:
            try:
                return bool(lock.reacquire())
            except LockNotOwnedError:
                lock.local.token = None  # it expired (and another process may hold it now)
        return bool(lock.acquire(blocking=False, token=owner))

    def release_lock(self, owner: str) -> None:
        lock = self._locks.get(owner)
        if lock is None:
            return
        try:
            lock.release()
        except LockError:
            pass  # not held any more: nothing to release

    def take(self, timeout_s: float) -> str | None:
        """The next event, moved to the dispatching list; None after ``timeout_s``."""
        # redis-py types BLMOVE's timeout as whole seconds; Redis takes a fraction as well.
        blmove = cast(_BlockingMove, self._redis.blmove)
        item = blmove(self.keys.webhooks, self.keys.webhooks_dispatching, timeout_s, "LEFT", "RIGHT")
        return item.decode() if isinstance(item, bytes) else None

    def dispatching(self) -> list[str]:
        """Events a dispatcher took but did not finish (it died)."""
        items = cast("list[bytes]", self._redis.lrange(self.keys.webhooks_dispatching, 0, -1))
        return [item.decode() for item in items]

    def dispatched(self, item: str) -> None:
        self._redis.lrem(self.keys.webhooks_dispatching, 1, item)

    def pending(self, item: str) -> tuple[str, str] | None:
        """The prediction id and event of a queued event whose prediction still exists
        (so its webhook can still be sent); None if it expired meanwhile."""
        prediction_id, _, event = item.partition(" ")
        if not prediction_id or not event or not self._redis.hexists(self.keys.prediction(prediction_id), "webhook"):
            return None
        return prediction_id, event

    def event(self, item: str) -> WebhookEvent | None:
        """What to send for a queued event; None if the prediction expired meanwhile, or
        for an ``output`` or ``logs`` event once the prediction ended (its ``completed``
        carries the final state).

        A ``start`` event shows the prediction as it was when it started (running, no
        outputs), even if it ended before the event was sent. ``output`` and ``logs``
        show it as it is now; ``output`` adds ``output_events``: the data of the output
        events since the previous output webhook (each a list of ``{"index", "output"}``).
        """
        prediction_id, _, event = item.partition(" ")
        name, _, window = event.partition(":")
        values: list[Any] = self._redis.hmget(
            self.keys.prediction(prediction_id), ["webhook", "result", "created", "started", "progress", "logs"]
        )
        url, result, created, started, progress, logs = values
        if not isinstance(url, bytes) or created is None:
            return None
        if name == "start":
            body = render_body("running", None, None, created.decode(), (started or b"").decode(), None).encode()
        elif name in ("output", "logs"):
            if result is not None:
                return None
            body = render_open(created, started, progress, logs)
            if name == "output":
                body = body[:-1] + b',"output_events":[' + b",".join(self._outputs_in(prediction_id, window)) + b"]}"
        elif isinstance(result, bytes):
            body = result
        else:
            return None
        return WebhookEvent(item, prediction_id, event, url.decode(), body)

    def _outputs_in(self, prediction_id: str, window: str) -> list[bytes]:
        """The data of the output events after the first id of ``window`` up to its second."""
        after, _, last = window.partition(":")
        if not last:
            return []
        found: Any = self._redis.xrange(self.keys.events(prediction_id), f"({after}" if after != "0" else "-", last)
        return [fields[EVENT_KEYS.data] for _, fields in found if fields.get(EVENT_KEYS.type) == b"output"]

    def secret(self) -> str:
        """The namespace's generated signing secret, created on first use."""
        self._redis.set(self.keys.webhooks_secret, secrets.token_hex(32), nx=True)
        value = self._redis.get(self.keys.webhooks_secret)
        assert isinstance(value, bytes)
        return value.decode()

    def count(self, outcome: str) -> None:
        """Count a delivery attempt's outcome (``tungstenkit._measurements.WEBHOOK_OUTCOMES``)."""
        self._redis.hincrby(self.keys.metrics, f"webhooks:{outcome}", 1)
