"""Long-lived threads that never die silently.

A ``SupervisedThread`` runs ``loop()``. What the loop expects (Redis away, or refusing
writes for a while) it handles itself, retrying with backoff. Anything else that escapes
it is a bug or a state the thread cannot recover from: it is logged with its traceback
and handed to ``on_failure``, which by default ends the process with a non-zero code so
that its supervisor starts a fresh one. A process whose thread died must not go on
looking alive (a worker without its heartbeat is taken for dead by its peers; one
without its writer runs batches whose results are never recorded).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Exit code of a process ended because one of its threads died (sysexits' EX_SOFTWARE).
EXIT_THREAD_FAILED = 70

FailureHandler = Callable[["SupervisedThread", BaseException], None]


def exit_process(thread: SupervisedThread, exc: BaseException) -> None:
    """End the process at once with ``EXIT_THREAD_FAILED`` (the default failure handler)."""
    logger.critical("Ending the process (code %d) so that its supervisor restarts it", EXIT_THREAD_FAILED)
    logging.shutdown()
    os._exit(EXIT_THREAD_FAILED)


class SupervisedThread(threading.Thread):
    """A daemon thread running ``loop()``, whose death is never silent."""

    def __init__(self, name: str, on_failure: FailureHandler | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.on_failure: FailureHandler = on_failure or exit_process
        #: What ended the thread, if it died.
        self.failure: BaseException | None = None

    def loop(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:
            self.failure = exc
            logger.critical("Thread %s died: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
            self.on_failure(self, exc)
