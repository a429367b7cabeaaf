"""Giving memory back to the system after a burst of large request bodies.

glibc's ``malloc`` serves blocks below its mmap threshold from heaps that it seldom returns
to the system, and raises that threshold (up to 32 MiB) each time a larger block is freed.
So after a burst of bodies of a few MB each, an API process kept most of their memory for
good (10 bodies of 20 MB at once: 52 MB before, 1.1 GB at the peak, 880 MB after). With a
fixed threshold of 1 MiB, every body-sized block (the body, the decoded JSON string, the
encoded inputs) gets a mapping of its own that goes back to the system when it is freed;
the small blocks of ordinary requests are served from the heaps as before.
"""

from __future__ import annotations

import ctypes
import logging
import sys

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
