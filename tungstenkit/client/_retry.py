"""When a request is sent again, and how long to wait first.

Reads (``GET``) and cancels change nothing when repeated, so they are retried after any
transport failure and after 429, 502, 503 and 504. A submit (``POST /predictions``) is
retried only where the server surely did not queue it: the connection was never made,
or the server refused it with 429 (queue full) or 503 (unavailable, draining). Each
submit carries an ``Idempotency-Key`` that stays the same across its retries: a server
that honours the header (this one does) runs a retried submit once however it was
interrupted; the rule above stays this strict so that servers that ignore it are safe too.
"""

from __future__ import annotations

import email.utils
import enum
import time
from dataclasses import dataclass

import httpx

#: The header that names one submit across its retries.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Retry(enum.Enum):
    """What may be retried for one kind of request."""

    #: GET, cancel: any transport failure, 429, 502, 503, 504.
    IDEMPOTENT = "idempotent"
    #: POST /predictions: connection never made, 429, 503.
    SUBMIT = "submit"
    #: Transport failures only: the status is the answer (``/health`` answers 503 when not ready).
    TRANSPORT = "transport"


_STATUSES = {
    Retry.IDEMPOTENT: frozenset({429, 502, 503, 504}),
    Retry.SUBMIT: frozenset({429, 503}),
    Retry.TRANSPORT: frozenset(),
}
#: Failures that happen before a byte of the request is sent.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts at most; waits double from ``backoff_s`` up to ``max_delay_s``,
    or follow the server's ``Retry-After`` (capped the same)."""

    retries: int = 5
    backoff_s: float = 0.5
    max_delay_s: float = 30.0

    def retries_status(self, retry: Retry, status_code: int) -> bool:
        return status_code in _STATUSES[retry]

    def retries_failure(self, retry: Retry, exc: httpx.TransportError) -> bool:
        if isinstance(exc, httpx.UnsupportedProtocol):
            return False  # a wrong URL stays wrong
        return retry is not Retry.SUBMIT or isinstance(exc, _NEVER_SENT)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_delay_s)


def retry_after_s(response: httpx.Response) -> float | None:
    """The response's ``Retry-After`` in seconds (it may be seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
