"""Exponential waits between retries, shared by every thread that retries Redis.

Why our own beside redis-py's ``Retry`` (which ``connect`` and the API's client use, where
a call is only tried again): the worker's and the dispatcher's threads wait on their stop
event, so that stopping a worker never waits out a backoff, and between tries they keep,
put back or hand over the work a failed call carried, which a retried call cannot do.
"""

from __future__ import annotations

import threading

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


class Backoff:
    """Waits 0.1, 0.2, 0.4 ... up to 5 s between retries; ``reset`` after a success."""

    def __init__(self) -> None:
        self._delay = _BACKOFF_START_S

    def wait(self, stop: threading.Event) -> None:
        """Wait the next delay, or less if ``stop`` is set meanwhile."""
        stop.wait(self._delay)
        self._delay = min(self._delay * 2, _BACKOFF_MAX_S)

    def reset(self) -> None:
        self._delay = _BACKOFF_START_S
