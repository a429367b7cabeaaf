"""Webhooks: what a client asks for, what is sent, and how it is signed.

A client adds ``?webhook=URL`` (and optionally ``webhook_events=start,completed``; the
default is ``completed``) to ``POST /predictions`` or ``POST /predict``. When an event
happens, the server POSTs the prediction's ``GET`` body, with its ``id`` and the
``event`` added, to the URL, with these headers:

    X-Tungsten-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
    X-Tungsten-Event: start | output | logs | completed
    X-Tungsten-Delivery: <an id that stays the same across retries of one delivery>

A receiver recomputes the HMAC with the shared secret over the raw body, compares it in
constant time, and refuses old timestamps (replays); ``verify_signature`` does that.
This module is shared by the API (checking what clients ask) and the webhook workers
(signing what they send); it imports neither redis nor rq.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from tungstenkit._errors import InvalidWebhook, URLRefused
from tungstenkit._fetch import Allowlist, parse_url

#: Events a client can ask for, in the order they happen. ``output`` and ``logs`` are sent
#: at most every 500 ms per prediction, and never after ``completed``.
EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = ("completed",)
MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "X-Tungsten-Signature"
EVENT_HEADER = "X-Tungsten-Event"
DELIVERY_HEADER = "X-Tungsten-Delivery"
#: How old a signature ``verify_signature`` accepts by default.
DEFAULT_TOLERANCE_S = 300
#: Each retry of a delivery waits this many times longer than the one before.
BACKOFF_FACTOR = 4


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook a client asked for with its prediction."""

    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS

    @classmethod
    def parse(cls, url: str | None, events: str | None, allowlist: Allowlist) -> WebhookRequest | None:
        """The webhook of the ``webhook`` and ``webhook_events`` query parameters; None if absent.

        The URL passes the address checks that need no DNS lookup (scheme, literal private
        addresses); its host name is resolved and checked again at each delivery.
        """
        if url is None:
            if events is not None:
                raise InvalidWebhook("webhook_events needs a webhook URL", "webhook_events")
            return None
        if len(url) > MAX_URL_LENGTH:
            raise InvalidWebhook(f"The webhook URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parse_url(url, allowlist)
        except URLRefused as exc:
            raise InvalidWebhook(f"The webhook URL is refused: {exc}") from None
        return cls(url, parse_events(events))


def parse_events(raw: str | None) -> tuple[str, ...]:
    """``start,completed`` (commas or spaces) as a tuple in ``EVENTS`` order."""
    if raw is None:
        return DEFAULT_EVENTS
    asked = {part.strip().lower() for part in raw.replace(",", " ").split()}
    unknown = sorted(asked - set(EVENTS))
    if unknown or not asked:
        what = f"unknown event {', '.join(map(repr, unknown))}" if unknown else "no event given"
        raise InvalidWebhook(f"webhook_events: {what}; expected some of {', '.join(EVENTS)}", "webhook_events")
    return tuple(e for e in EVENTS if e in asked)


def event_name(event: str) -> str:
    """The event a queued one is (``output:<after>:<last>`` is an ``output``)."""
    return event.partition(":")[0]


def payload(prediction_id: str, event: str, body: bytes) -> bytes:
    """The delivered JSON: the prediction's ``GET`` body with ``id`` and ``event`` first."""
    event = event_name(event)
    return b'{"id":"' + prediction_id.encode() + b'","event":"' + event.encode() + b'",' + body[1:]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Tungsten-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float | None = None, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def retry_intervals(retries: int, backoff_s: int) -> list[int]:
    """Seconds before each retry: ``backoff_s``, then 4 times longer each time (at most a day)."""
    return [min(backoff_s * BACKOFF_FACTOR**i, 86_400) for i in range(retries)]
