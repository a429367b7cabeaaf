"""Exponential waits between retries, shared by every thread that retries Redis."""

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
