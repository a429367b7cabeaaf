"""Admission: how many request body bytes one API process holds at once.

Past the budget a body gets 503 with ``Retry-After``, in the API's error shape, so that
clients and load balancers retry (perhaps on another instance) instead of the process
growing without bound. (Requests in progress are bounded in ``app.http_protocol``.)
"""

from __future__ import annotations

from tungstenkit.app.error_responses import Overloaded

#: Seconds a client should wait before retrying a body refused for lack of room.
RETRY_AFTER_S = 1


class BodyBudget:
    """The request body bytes one process holds at once, over all requests.

    Bytes are counted as they arrive (a declared length that cannot fit is refused before
    any is read): a client that declares a large body and sends it slowly holds only what it
    sent. The first ``free_bytes`` of every body are not counted, so small requests are never
    refused for the sake of large ones (uvicorn buffers that much per connection anyway).
    """

    def __init__(self, limit: int, free_bytes: int) -> None:
        self.limit = limit
        self.free_bytes = free_bytes
        self.held = 0

    def check_declared(self, length: int) -> None:
        """Refuse at once a body that cannot fit now."""
        if self.limit and length > self.free_bytes and self.held + length - self.free_bytes > self.limit:
            raise self._full()

    def take(self, before: int, size: int) -> int:
        """Count a body growing from ``before`` to ``size`` bytes; returns the bytes counted."""
        counted = max(0, size - max(before, self.free_bytes))
        if counted and self.limit and self.held + counted > self.limit:
            raise self._full()
        self.held += counted
        return counted

    def give_back(self, counted: int) -> None:
        self.held -= counted

    def _full(self) -> Overloaded:
        return Overloaded(
            f"The server holds {self.limit} bytes of request bodies already; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
