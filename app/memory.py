"""Giving memory back to the system after a burst of large request bodies.

Two things kept it. Reference cycles: a request's frames can end up in one (redis-py keeps
an exception in a list that its own traceback's frame holds, when a script has to be loaded
again), and with them the request's arguments, until the next full garbage collection, which
an idle server may not run for hours. So once a burst of large bodies is over, the API
collects. And the allocator: glibc's ``malloc`` serves blocks below its mmap threshold from heaps that it seldom returns
to the system, and raises that threshold (up to 32 MiB) each time a larger block is freed.
So after a burst of bodies of a few MB each, an API process kept most of their memory for
good (10 bodies of 20 MB at once: 52 MB before, 1.1 GB at the peak, 880 MB after). With a
fixed threshold of 1 MiB, every body-sized block (the body, the decoded JSON string, the
encoded inputs) gets a mapping of its own that goes back to the system when it is freed;
the small blocks of ordinary requests are served from the heaps as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: ``M_MMAP_THRESHOLD`` in glibc's ``malloc.h``.
_M_MMAP_THRESHOLD = -3
#: Blocks of at least this size get a mapping of their own.
LARGE_BLOCK_BYTES = 1024 * 1024


def return_large_blocks_to_the_system() -> bool:
    """Set glibc's mmap threshold to ``LARGE_BLOCK_BYTES``; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # only glibc has it (musl's mallopt does nothing)
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
    except (OSError, AttributeError):
        return False
    if not done:
        logger.warning("Could not set the C library's mmap threshold: large request bodies may leave memory held")
    return done


class AfterBursts:
    """Collects garbage (and trims the C heap) once large bodies stop arriving: a second
    after the last one ended with none held, then at most once a second while they come."""

    #: Seconds between the end of a large body and the collection.
    DELAY_S = 1.0

    def __init__(self, bodies_held: Callable[[], int]) -> None:
        self._bodies_held = bodies_held
        self._pending: asyncio.TimerHandle | None = None
        self.collections = 0

    def large_body_done(self) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.DELAY_S, self._collect)

    def _collect(self) -> None:
        self._pending = None
        if self._bodies_held():
            self.large_body_done()  # the burst goes on: later
            return
        gc.collect()
        _trim_c_heap()
        self.collections += 1


def _trim_c_heap() -> None:
    """Give free pages inside the C heaps back to the system (glibc's ``malloc_trim``)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc
