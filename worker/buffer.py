"""Entries a worker has read but not finished, and how batches are cut from them.

The reader thread puts entries in; the model thread takes batches out; the listener
thread drops the work of predictions that ended. One lock guards it all.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from tungstenkit._queue import BatchStart, Entry, EntryResult, ResultKind, StoredFile
from tungstenkit.worker.input_outcome import InputOutcome, as_outcome

#: What a prediction that no worker started by its deadline reads as its error.
DEADLINE_EXCEEDED = "Deadline exceeded"


@dataclass(eq=False)
class Work:
    """One entry with its decoded inputs and the outputs gathered so far."""

    entry: Entry
    inputs: list[Any]
    #: Monotonic time the entry was read, for the bounded batch wait.
    read_at: float = field(default_factory=time.monotonic)
    next_input: int = 0
    #: JSON strings, or output objects the writer thread serialises.
    outputs: list[Any] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)
    done_inputs: int = 0
    in_flight: int = 0
    ended: bool = False
    reported: bool = False
    #: When the first batch holding this entry started.
    started_at: str = ""
    #: False while its URL inputs download (``tungstenkit.worker.preparer``): no batch
    #: takes it until then, so a slow download holds up its own entry only.
    ready: bool = True
    #: Its URL inputs, downloaded ahead of its batch (or why each could not be).
    fetched: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outputs = [None] * self.entry.count

    @property
    def remaining(self) -> int:
        return self.entry.count - self.next_input


@dataclass(frozen=True)
class Slice:
    work: Work
    offset: int
    count: int


@dataclass
class Batch:
    """Inputs run together in one ``predict`` call."""

    batch_id: int
    slices: list[Slice]

    @property
    def inputs(self) -> list[Any]:
        return [x for s in self.slices for x in s.work.inputs[s.offset : s.offset + s.count]]

    @property
    def prediction_ids(self) -> list[str]:
        return list(dict.fromkeys(s.work.entry.prediction_id for s in self.slices))

    @property
    def fetched(self) -> dict[str, Any]:
        """The URL inputs its entries downloaded ahead of it."""
        return {url: got for s in self.slices for url, got in s.work.fetched.items()}

    @property
    def sids(self) -> list[str]:
        return list(dict.fromkeys(s.work.entry.sid for s in self.slices))

    def start_record(self, at: float | None = None) -> BatchStart:
        """What Redis is told when the batch starts.

        A prediction is ``whole`` here when its only slice is all of a whole entry read
        for the first time: then a single check tells whether it may still run.
        """
        slices_of: dict[str, list[Slice]] = {}
        for s in self.slices:
            slices_of.setdefault(s.work.entry.prediction_id, []).append(s)
        whole, hooked, queued_ms = [], [], []
        for parts in slices_of.values():
            entry = parts[0].work.entry
            whole.append(
                len(parts) == 1
                and parts[0].offset == 0
                and parts[0].count == entry.count
                and entry.whole
                and not entry.redelivered
            )
            hooked.append("start" in entry.webhook_events)
            first = next((p for p in parts if p.work.entry.start == 0 and p.offset == 0), None)
            queued_ms.append(first.work.entry.queued_at_ms if first is not None and not entry.redelivered else 0)
        return BatchStart(list(slices_of), self.sids, whole, hooked, queued_ms, time.time() if at is None else at)

    def __len__(self) -> int:
        return sum(s.count for s in self.slices)

    def split(self) -> tuple[Batch, Batch]:
        """Two halves by input count (a slice may be cut in two); same batch id."""
        half = len(self) // 2
        first: list[Slice] = []
        second: list[Slice] = []
        taken = 0
        for s in self.slices:
            if taken >= half:
                second.append(s)
            elif taken + s.count <= half:
                first.append(s)
            else:
                head = half - taken
                first.append(Slice(s.work, s.offset, head))
                second.append(Slice(s.work, s.offset + head, s.count - head))
            taken += s.count
        return Batch(self.batch_id, first), Batch(self.batch_id, second)


@dataclass(frozen=True)
class SliceOutcome:
    """What one slice of a batch produced: its outputs, or an error message."""

    slice: Slice
    #: One per input of the slice: its output, or why that input alone failed.
    outputs: Sequence[InputOutcome | str] | None = None
    error: str | None = None

    @classmethod
    def of_batch(
        cls, batch: Batch, outputs: Sequence[InputOutcome | str] | None, error: str | None
    ) -> list[SliceOutcome]:
        outcomes = []
        position = 0
        for s in batch.slices:
            part = None if outputs is None else outputs[position : position + s.count]
            outcomes.append(cls(s, part, error))
            position += s.count
        return outcomes


class BatchBuffer:
    """A FIFO of read entries from which same-option batches are cut.

    Entries still downloading their URL inputs (not ``ready``) keep their place in the
    FIFO, so that the buffer accounts for every entry the worker holds, but no batch
    takes them until ``mark_ready``; ``buffered_inputs`` counts the ready ones only.

    Entries whose deadline passed before any of their inputs started are taken out as
    ``EXPIRED`` results instead of joining a batch (``take_expired``); ``clock_ms`` tells
    the time in the deadlines' clock (Redis's).
    """

    def __init__(self, clock_ms: Callable[[], float] | None = None) -> None:
        self._lock = threading.Condition()
        self._queue: deque[Work] = deque()
        self._buffered_inputs = 0
        self._ids = itertools.count(1)
        self._closed = False
        self._clock_ms = clock_ms or (lambda: time.time() * 1000)
        self._expired: list[EntryResult] = []

    @property
    def buffered_inputs(self) -> int:
        return self._buffered_inputs

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, works: Sequence[Work]) -> None:
        with self._lock:
            for work in works:
                self._queue.append(work)
                if work.ready:
                    self._buffered_inputs += work.remaining
            self._lock.notify_all()

    def mark_ready(self, work: Work) -> None:
        """The entry's URL inputs are downloaded: batches may take it now."""
        with self._lock:
            if work.ready or work.ended:
                return
            work.ready = True
            self._buffered_inputs += work.remaining
            self._lock.notify_all()

    def set_aside(self, steps_aside: Callable[[Entry], bool]) -> list[Work]:
        """Take the ready entries no input of which has started and for which
        ``steps_aside`` holds out of the batches' reach (they keep their place) while
        they are offered back to the queue; ``settle`` says what became of them."""
        with self._lock:
            offered = [
                w
                for w in self._queue
                if w.ready and not w.ended and not w.next_input and not w.in_flight and steps_aside(w.entry)
            ]
            for work in offered:
                work.ready = False
                self._buffered_inputs -= work.remaining
            return offered

    def settle(self, offered: Sequence[Work], gone: Collection[str]) -> None:
        """The entries of ``offered`` (``set_aside``) whose ids are in ``gone`` went back to
        the queue, to run elsewhere or later (no result for them here); the others are
        batches' again."""
        with self._lock:
            for work in offered:
                if work.entry.sid in gone:
                    work.reported = True
                    self._end(work)
                elif not work.ended:
                    work.ready = True
                    self._buffered_inputs += work.remaining
            self._lock.notify_all()

    def close(self) -> None:
        """Wake a waiting ``take`` so a stopping worker can leave its loop."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def take(self, max_size: int, timeout_s: float, wait_s: float = 0.0) -> Batch | None:
        """Cut the next batch, waiting up to ``timeout_s`` for a first input.

        The batch starts with the oldest input and adds later ones of the same option
        group, up to ``max_size``. With ``wait_s`` it holds a partial batch until the
        oldest input has waited that long (counted from when it was read, so a backlog
        runs at once).
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while (head := self._head()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._lock.wait(remaining)
            self._expire()
            if (head := self._head()) is None:
                return None
            if wait_s > 0:
                until = head.read_at + wait_s
                while self._group_size(head.entry.group) < max_size and not self._closed:
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._lock.wait(remaining)
                    if (head := self._head()) is None:
                        return None
            return self._cut(max_size)

    def _expire(self) -> None:
        """Take out the entries that missed their deadline before any input started (lock
        held). One that started, or that was running when a worker died, runs on."""
        if not any(w.entry.deadline_ms for w in self._queue):
            return
        now = self._clock_ms()
        for work in [w for w in self._queue if w.entry.deadline_ms]:
            missed = work.entry.deadline_ms <= now and not work.entry.redelivered
            if missed and not work.started_at and not work.next_input:
                self._end(work)
                self._emit(self._expired, work, EntryResult.EXPIRED, DEADLINE_EXCEEDED)

    def take_expired(self) -> list[EntryResult]:
        """The results of entries that missed their deadline, taken out since the last call."""
        with self._lock:
            expired, self._expired = self._expired, []
            return expired

    def _head(self) -> Work | None:
        """The oldest ready entry (lock held)."""
        return next((w for w in self._queue if w.ready), None)

    def _group_size(self, group: str) -> int:
        return sum(w.remaining for w in self._queue if w.ready and w.entry.group == group)

    def _cut(self, max_size: int) -> Batch:
        """The oldest entry, then later entries of its group that fit whole (first fit).

        Entries are not split across batches, so an entry's outputs are all produced by
        one ``predict`` call: if the worker dies, redelivering the entry runs nothing
        twice. Only an entry larger than the batch (a worker started with a smaller
        batch size than the API's) is split. A redelivered entry runs alone.
        """
        first = self._head()
        assert first is not None
        head = first.entry
        group = head.group
        slices: list[Slice] = []
        room = max_size
        kept: deque[Work] = deque()
        while self._queue:
            work = self._queue.popleft()
            # An entry that does not fit waits for the next batch, unless it is the first
            # and larger than any batch. An entry redelivered after a worker died runs
            # alone: if it is what kills workers, it takes no other input down with it.
            suspect = work.entry.redelivered or head.redelivered
            fits = not slices or (work.remaining <= room and not suspect)
            if room and work.ready and work.entry.group == group and fits:
                count = min(room, work.remaining)
                slices.append(Slice(work, work.next_input, count))
                work.next_input += count
                work.in_flight += count
                room -= count
                self._buffered_inputs -= count
            if work.remaining:
                kept.append(work)
        self._queue = kept
        return Batch(next(self._ids), slices)

    def finish(
        self, batch: Batch, outputs: Sequence[InputOutcome | str] | None, error: str | None
    ) -> list[EntryResult]:
        """Record a whole batch's outcome; see ``record``."""
        return self.record(SliceOutcome.of_batch(batch, outputs, error))

    def record(self, outcomes: Sequence[SliceOutcome]) -> list[EntryResult]:
        """Record what slices produced; returns the results of entries now complete.

        An error ends every entry it touched: their predictions fail, so their
        remaining inputs are dropped too. An input that failed on its own (its file
        could not be fetched) ends only its entry.
        """
        results: list[EntryResult] = []
        with self._lock:
            for outcome in outcomes:
                s = outcome.slice
                work = s.work
                work.in_flight -= s.count
                if work.ended:
                    if not work.in_flight:
                        self._emit(results, work, EntryResult.DROPPED)
                elif outcome.error is not None:
                    self._end(work)
                    self._emit(results, work, EntryResult.ERROR, outcome.error)
                else:
                    assert outcome.outputs is not None
                    inputs = [as_outcome(o) for o in outcome.outputs]
                    failed = next(((k, o.failure) for k, o in enumerate(inputs) if o.failure is not None), None)
                    if failed is not None:
                        index = work.entry.start + s.offset + failed[0]
                        self._end(work)
                        self._emit(results, work, EntryResult.ERROR, failed[1].message(index))
                    else:
                        # Serialised outputs (str), or output objects the writer serialises.
                        work.outputs[s.offset : s.offset + s.count] = [
                            o.output if o.raw is None else o.raw for o in inputs
                        ]
                        for item in inputs:
                            work.files.extend(item.files)
                        work.done_inputs += s.count
                        if work.done_inputs == work.entry.count:
                            work.ended = True
                            self._emit_outputs(results, work)
        return results

    @staticmethod
    def fail_entry(entry: Entry, message: str) -> EntryResult:
        """The result of an entry that cannot run at all (its inputs did not decode)."""
        return EntryResult(entry, EntryResult.ERROR, message)

    def mark_started(self, batch: Batch, when: str) -> None:
        for s in batch.slices:
            if not s.work.started_at:
                s.work.started_at = when

    def without_ended(self, batch: Batch) -> tuple[Batch, list[EntryResult]]:
        """The batch minus slices whose entries ended before it started, and their results."""
        live: list[Slice] = []
        results: list[EntryResult] = []
        with self._lock:
            for s in batch.slices:
                if s.work.ended:
                    s.work.in_flight -= s.count
                    if not s.work.in_flight:
                        self._emit(results, s.work, EntryResult.DROPPED)
                else:
                    live.append(s)
        return Batch(batch.batch_id, live), results

    def drop_predictions(self, prediction_ids: set[str]) -> list[EntryResult]:
        """Forget the work of predictions that ended elsewhere (canceled, failed).

        Entries with nothing running are reported as dropped at once; an entry with
        inputs in the running batch is reported when that batch finishes.
        """
        return self._drop_where(lambda work: work.entry.prediction_id in prediction_ids)

    def drop_entries(self, sids: set[str]) -> list[EntryResult]:
        """Forget entries another worker took over, as ``drop_predictions`` does."""
        return self._drop_where(lambda work: work.entry.sid in sids)

    def _drop_where(self, dropped: Callable[[Work], bool]) -> list[EntryResult]:
        results: list[EntryResult] = []
        with self._lock:
            for work in list(self._queue):
                if dropped(work):
                    self._end(work)
                    if not work.in_flight:
                        self._emit(results, work, EntryResult.DROPPED)
        return results

    def end_in_batch(
        self, batch: Batch, prediction_ids: Collection[str] = (), sids: Collection[str] = ()
    ) -> list[EntryResult]:
        """End the entries of a running batch whose predictions already ended (or that
        another worker took over).

        Their outputs would be discarded anyway, so they are released at once.
        """
        results: list[EntryResult] = []
        with self._lock:
            for s in batch.slices:
                if s.work.entry.prediction_id in prediction_ids or s.work.entry.sid in sids:
                    self._end(s.work)
                    self._emit(results, s.work, EntryResult.DROPPED)
        return results

    def fail_in_batch(self, batch: Batch, message: str) -> list[EntryResult]:
        """Fail the entries of a running batch now, with ``message`` (what the batch
        produces later is dropped)."""
        results: list[EntryResult] = []
        with self._lock:
            for s in batch.slices:
                self._end(s.work)
                self._emit(results, s.work, EntryResult.ERROR, message)
        return results

    def held_sids(self) -> set[str]:
        with self._lock:
            return {w.entry.sid for w in self._queue}

    def drain(self) -> list[Entry]:
        """Remove and return the entries no input of which has started (for hand-back)."""
        with self._lock:
            untouched = [w for w in self._queue if w.next_input == 0 and not w.ended]
            for work in untouched:
                self._end(work)
                work.reported = True
            return [w.entry for w in untouched]

    def _end(self, work: Work) -> None:
        if work.ended:
            return
        work.ended = True
        if work.ready:
            self._buffered_inputs -= work.remaining
        work.next_input = work.entry.count
        try:
            self._queue.remove(work)
        except ValueError:
            pass

    @classmethod
    def _emit_outputs(cls, results: list[EntryResult], work: Work) -> None:
        if all(isinstance(o, str) for o in work.outputs):
            cls._emit(results, work, EntryResult.OUTPUTS, ",".join(work.outputs), tuple(work.files))
        else:
            cls._emit(results, work, EntryResult.OUTPUTS, "", tuple(work.files), tuple(work.outputs))

    @staticmethod
    def _emit(
        results: list[EntryResult],
        work: Work,
        kind: ResultKind,
        payload: str = "",
        files: tuple[StoredFile, ...] = (),
        outputs: tuple[Any, ...] = (),
    ) -> None:
        """Each entry gets exactly one result, whoever ends it first."""
        if not work.reported:
            work.reported = True
            results.append(EntryResult(work.entry, kind, payload, files, work.started_at, outputs))
