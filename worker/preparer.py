"""Downloading entries' URL inputs before they join a batch, off the model thread.

An entry whose inputs hold URLs waits in the buffer, not ready, while a small pool of
download threads fetches them; once every URL of it is fetched (or failed), it is
ready and the next batch may take it. Meanwhile the model runs whatever else is ready,
so a slow server delays only the predictions that use it (13.4: three URLs dripping
one byte every 2 s used to hold the only worker for two minutes).

Two bounds keep one host from taking every thread: ``threads`` downloads at once in
all, and ``per_host`` of them to any one host (name and port). A download waiting for
its host's turn holds no thread. The entries held here are in the worker's pending
list like any buffered entry, so the heartbeat keeps them owned, a cancel drops them
(``Work.ended``: their downloads are skipped, or their bytes dropped), and a stopping
worker hands them back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tungstenkit._fetch import FetchPolicy, host_of
from tungstenkit._prepare import download
from tungstenkit._supervised_thread import FailureHandler, SupervisedThread
from tungstenkit.worker.buffer import Work

logger = logging.getLogger(__name__)

#: Downloads one worker runs at once, over all hosts.
DOWNLOAD_THREADS = 8
#: Downloads one worker runs at once from one host (name and port).
DOWNLOADS_PER_HOST = 2
#: Inputs a worker holds while their URLs download (or wait to), at least: past it (or
#: past four batches) it reads no more work. Entries waiting here do not count against
#: the one batch read ahead, so that a slow host never stops a worker from reading
#: other work; this bounds them instead.
MIN_BACKLOG_INPUTS = 32


@dataclass(eq=False)
class _Task:
    work: Work
    url: str
    host: str


class Preparer:
    """Fetches the URL inputs of entries handed to ``submit``; calls ``on_ready(work)``
    once each entry has all of them (from a download thread)."""

    def __init__(
        self,
        policy: FetchPolicy,
        on_ready: Callable[[Work], None],
        *,
        threads: int = DOWNLOAD_THREADS,
        per_host: int = DOWNLOADS_PER_HOST,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self._policy = policy
        self._on_ready = on_ready
        self._per_host = per_host
        self._cond = threading.Condition()
        self._tasks: deque[_Task] = deque()
        self._active_hosts: dict[str, int] = {}
        #: Per entry: downloads not finished, and those running now.
        self._left: dict[Work, int] = {}
        self._running: dict[Work, int] = {}
        self._halt = False
        self._threads = [_Downloader(self, n, on_failure) for n in range(threads)]

    def __repr__(self) -> str:
        return f"<Preparer entries={len(self._left)} queued={len(self._tasks)} hosts={self._active_hosts}>"

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Start no more downloads; those running end within their timeouts (daemon threads)."""
        with self._cond:
            self._halt = True
            self._cond.notify_all()

    def submit(self, work: Work, urls: list[str]) -> None:
        with self._cond:
            self._left[work] = len(urls)
            self._tasks.extend(_Task(work, url, host_of(url)) for url in urls)
            self._cond.notify_all()

    @property
    def held_inputs(self) -> int:
        """Inputs of the entries whose URLs are downloading or waiting to."""
        with self._cond:
            return sum(w.entry.count for w in self._left if not w.ended)

    def _next(self) -> _Task | None:
        """The oldest task whose host has room (lock held); entries that ended are forgotten."""
        for task in list(self._tasks):
            if task.work.ended:
                self._tasks.remove(task)
                self._left.pop(task.work, None)
                continue
            if self._active_hosts.get(task.host, 0) < self._per_host:
                self._tasks.remove(task)
                self._active_hosts[task.host] = self._active_hosts.get(task.host, 0) + 1
                self._running[task.work] = self._running.get(task.work, 0) + 1
                return task
        return None

    def next_task(self) -> _Task | None:
        with self._cond:
            while not self._halt:
                task = self._next()
                if task is not None:
                    return task
                self._cond.wait()
            return None

    def run_task(self, task: _Task) -> None:
        result = download(task.url, self._policy) if not task.work.ended else None
        with self._cond:
            self._active_hosts[task.host] -= 1
            if not self._active_hosts[task.host]:
                del self._active_hosts[task.host]
            self._running[task.work] -= 1
            if not self._running[task.work]:
                del self._running[task.work]
            if result is not None:
                task.work.fetched[task.url] = result
            left = self._left.get(task.work)
            if left is not None:
                self._left[task.work] = left - 1
                if left == 1:
                    del self._left[task.work]
            self._cond.notify_all()
        if left == 1 and not task.work.ended:
            self._on_ready(task.work)


class _Downloader(SupervisedThread):
    def __init__(self, preparer: Preparer, number: int, on_failure: FailureHandler | None) -> None:
        super().__init__(f"tungsten-download-{number}", on_failure)
        self._preparer = preparer

    def loop(self) -> None:
        while (task := self._preparer.next_task()) is not None:
            self._preparer.run_task(task)
