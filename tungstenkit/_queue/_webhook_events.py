"""Webhook events on their way to becoming RQ jobs (the webhook worker's side, blocking)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

from tungstenkit._queue._keys import Keys
from tungstenkit._queue._records import render_body
from tungstenkit._queue._scripts import script


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
        lock = script("lock")
        args = (lock.sha, 1, self.keys.webhooks_lock, owner, ttl_ms)
        try:
            return bool(self._redis.evalsha(*args))
        except NoScriptError:
            self._redis.script_load(lock.source)
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
        values: list[Any] = self._redis.hmget(
            self.keys.prediction(prediction_id), ["webhook", "result", "created", "started"]
        )
        url, result, created, started = values
        if not isinstance(url, bytes) or created is None:
            return None
        if event == "start":
            body = render_body("running", None, None, created.decode(), (started or b"").decode(), None).encode()
        elif isinstance(result, bytes):
            body = result
        else:
            return None
        return WebhookEvent(item, prediction_id, event, url.decode(), body)

    def secret(self) -> str:
        """The namespace's generated signing secret, created on first use."""
        self._redis.set(self.keys.webhooks_secret, secrets.token_hex(32), nx=True)
        value = self._redis.get(self.keys.webhooks_secret)
        assert isinstance(value, bytes)
        return value.decode()

    def count(self, outcome: str) -> None:
        """Count a delivery attempt's outcome (``tungstenkit._measurements.WEBHOOK_OUTCOMES``)."""
        self._redis.hincrby(self.keys.metrics, f"webhooks:{outcome}", 1)
