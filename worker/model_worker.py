"""A worker process: loads the model once, then runs batches cut from the shared queue.

Threads, and who owns what
--------------------------
The model runs on the **model thread** (the process's main thread: ``setup``, ``run`` or
``run_burst``, the signal handlers). Redis traffic and housekeeping run on threads of their
own, each a ``SupervisedThread`` that calls back into ``Worker``:

- **reader** (``Reader``): ``_wanted_inputs``, ``_on_entries``, ``_step_aside``;
- **writer** (``Writer``): ``_on_batch_predictions_ended``, ``_on_batch_entries_lost``, and
  ``count_written`` (metrics) after each write;
- **stop listener** (``StopListener``): ``_on_predictions_stopped``, ``_on_wait_started``;
- **heartbeat** (``Heartbeat``): ``_registry_fields``, and sends the metrics;
- **reaper** (``Reaper``): ``_on_entries`` (entries taken over), ``_held_sids``;
- **preparer** (``Preparer``, for models with file inputs): downloads, then
  ``BatchBuffer.mark_ready``;
- **memory guard** (``MemoryGuard``, with a memory bound): ``_on_memory_exceeded``;
- and the runner's **watchdog** (``runner.Watchdog``): ``_on_model_stuck``.

Every piece of state that more than one thread touches is reached in exactly one way:

- entries read and not finished: the ``BatchBuffer``, behind its own lock (its methods only);
- writes waiting to be sent: the ``Writer``, behind its condition (``results``, ``started``,
  ``batch_ended``, ``events``, ``flush``, ``pending_sids``); ``Writer.failing`` is a flag the
  writer alone sets and the reader only reads;
- the running batch, ``_current``: ``_current_lock``. Only the model thread sets it; every
  other thread reads it under the lock, and ends or cancels within the lock, so the batch
  cannot finish or change in between (``_running()`` for a read alone);
- predictions known to have ended: ``_ended`` (an ``EndedPredictions``, behind its own lock);
- metrics: ``MetricDeltas``, behind its own lock;
- whether this worker's heartbeat still stands in Redis: ``Heartbeat.current``, behind the
  heartbeat's ``_beaten`` condition (the reader and the model thread ask it before reading
  or starting anything);
- stopping: the ``_stopping`` event (``stop()``, safe from signal handlers);
- ``exit_code`` and the watchdog that ends a worker failing to stop: ``_exit_lock`` (the
  first thread to fail or pass the memory bound decides the exit code);
- ``_state``, ``batches_run``, ``inputs_run`` and ``batch_ceiling``: written by the model
  thread alone; the heartbeat and the reader read each as one attribute (a stale value is
  at most one batch old, and the next beat or read corrects it);
- the out-of-memory ceiling's probe (``_fit_at_ceiling``, ``_probe_after``, ``_probing``,
  ``_out_of_memory_batches``): the model thread alone.

Nothing else is shared: a new callback from another thread uses one of these, or adds a
line here.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

import redis
from pydantic import ValidationError

from tungstenkit._errors import InvalidOutput, PredictionInterrupted, PredictionTimeout, SetupFailed
from tungstenkit._logging import TRACE
from tungstenkit._measurements import MetricDeltas, ThroughputMeter, gpu_memory
from tungstenkit._model import ModelDefinition
from tungstenkit._prepare import remote_urls
from tungstenkit._queue import (
    REDIS_ERRORS,
    Entry,
    EntryResult,
    Keys,
    WaitStarted,
    WorkerQueue,
    is_transient,
    now_iso,
    worker_id_for,
)
from tungstenkit._settings import Settings
from tungstenkit._supervised_thread import EXIT_THREAD_FAILED, SupervisedThread
from tungstenkit.worker.accounting import count_written, record_batch
from tungstenkit.worker.batch_events import BatchEvents, LogCapture
from tungstenkit.worker.buffer import Batch, BatchBuffer, SliceOutcome, Work
from tungstenkit.worker.input_outcome import InputOutcome
from tungstenkit.worker.memory_guard import MemoryGuard, resident_mb
from tungstenkit.worker.preparer import MIN_BACKLOG_INPUTS, Preparer
from tungstenkit.worker.redis_threads import Heartbeat, Reader, Reaper, StopListener, Writer
from tungstenkit.worker.runner import (
    EXIT_STUCK,
    ModelRunner,
    describe_exception,
    free_accelerator_memory,
    is_out_of_memory,
)

#: Exit codes the supervisor reads: the model cannot start, so restarting will not help.
EXIT_LOAD_FAILED = 3
EXIT_SETUP_FAILED = 4
EXIT_REDIS_UNREACHABLE = 5
#: The namespace's API serves a model with another digest (see ``worker_process``).
EXIT_MODEL_MISMATCH = 7
#: The worker passed ``TUNGSTEN_WORKER_MAX_MEMORY_MB`` (a fresh one replaces it).
EXIT_MEMORY_EXCEEDED = 8
#: Seconds a worker past its memory bound has to stop before its process is ended.
MEMORY_EXIT_FUSE_S = 5.0
#: Full batches at an out-of-memory ceiling before the worker tries larger ones again,
#: and the most that wait grows to after probes that ran out of memory again.
CEILING_PROBE_BATCHES = 100
MAX_CEILING_PROBE_BATCHES = 6400
#: Seconds a worker whose setup failed stays listed (as failed) in /health.
FAILED_WORKER_VISIBLE_S = 300
#: The reaper looks for dead workers at least this often (a worker released by its
#: supervisor is taken over within this time, whatever the heartbeat interval).
REAP_INTERVAL_S = 1.0

logger = logging.getLogger(__name__)


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    SETUP = "setup"
    READY = "ready"
    BUSY = "busy"
    STOPPING = "stopping"


class Worker:
    """Pulls batches for one model from Redis and runs them on the main thread."""

    def __init__(
        self,
        definition: ModelDefinition,
        client: redis.Redis,
        keys: Keys,
        settings: Settings,
        *,
        batch_size: int | None = None,
        model_name: str = "",
        tag: str = "",
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.batch_size = batch_size or definition.config.batch_size
        #: The largest batch that fit after one ran out of (GPU) memory: later batches are
        #: no larger. None until a batch runs out of memory. (Model thread only.)
        self.batch_ceiling: int | None = None
        #: Full batches run at the ceiling without running out of memory since it was last
        #: set; after ``_probe_after`` of them the ceiling is raised again (memory that
        #: another process held, or a fragmented cache, may have come back).
        self._fit_at_ceiling = 0
        self._probe_after = CEILING_PROBE_BATCHES
        self._probing = False
        self._out_of_memory_batches = 0
        self.worker_id = worker_id_for(os.getpid(), tag or uuid.uuid4().hex[:6])
        self.model_name = model_name or definition.name
        self._client = client
        self._queue = WorkerQueue(
            client,
            keys,
            result_ttl_s=settings.result_ttl_s,
            max_events=settings.max_events,
            max_log_bytes=settings.max_log_bytes,
            batch_size=self.batch_size,
        )
        self._keys = keys
        self._runner = ModelRunner(definition, settings, on_stuck=self._on_model_stuck)
        self._buffer = BatchBuffer(self._queue.redis_now_ms)
        # URL inputs are downloaded ahead of their batch by ``run``'s preparer (in burst
        # mode, inline with the batch, so that what runs depends only on what was queued).
        self._preparer: Preparer | None = None
        self._memory_guard = (
            MemoryGuard(settings.worker_max_memory_mb, self._on_memory_exceeded, on_failure=self._thread_failed)
            if settings.worker_max_memory_mb
            else None
        )
        self._state = WorkerState.STARTING
        self._stopping = threading.Event()
        self._current: Batch | None = None
        self._current_lock = threading.Lock()
        # Predictions known to have ended, so entries read later are dropped unrun.
        self._ended = EndedPredictions()
        #: Non-zero once the worker must exit with it (one of its threads died).
        self.exit_code = 0
        self._watchdog: threading.Timer | None = None
        self._exit_lock = threading.Lock()
        self.batches_run = 0
        self.inputs_run = 0
        self.started_at = now_iso()
        self._metrics = MetricDeltas()
        self._throughput = ThroughputMeter()
        self._writer = Writer(
            self._queue,
            self.worker_id,
            self._on_batch_predictions_ended,
            self._runner.serialize,
            self._on_batch_entries_lost,
            self._thread_failed,
            on_written=functools.partial(count_written, self._metrics),
        )
        self._listener = StopListener(
            client,
            keys.stop_channel,
            self._on_predictions_stopped,
            on_failure=self._thread_failed,
            waits=(keys.waits_channel, self._on_wait_started),
        )
        self._heartbeat = Heartbeat(
            self._queue,
            self.worker_id,
            self._registry_fields,
            settings.heartbeat_interval_s,
            self._metrics,
            ttl_s=settings.heartbeat_ttl_s,
            on_failure=self._thread_failed,
        )
        self._reader = Reader(
            self._queue,
            self.worker_id,
            self._wanted_inputs,
            self._on_entries,
            on_failure=self._thread_failed,
            heartbeat_current=self._heartbeat.current,
            step_aside=self._step_aside,
        )
        self._reaper = Reaper(
            self._queue,
            self.worker_id,
            settings.max_input_crashes,
            min(settings.heartbeat_interval_s, REAP_INTERVAL_S),
            self._on_entries,
            self._held_sids,
            on_failure=self._thread_failed,
        )

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id} state={self._state.value} batches={self.batches_run} "
            f"inputs={self.inputs_run} buffered={self._buffer.buffered_inputs}>"
        )

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def max_batch_size(self) -> int:
        """The batch size, or the ceiling that running out of memory taught."""
        return min(self.batch_size, self.batch_ceiling or self.batch_size)

    # -- lifecycle -------------------------------------------------------------------
    def setup(self) -> None:
        """Register, then run the model's ``setup()``; raises ``SetupFailed``."""
        self._queue.ensure_group()
        self._runner.install_interrupt_handler()
        self._set_state(WorkerState.SETUP)
        try:
            self._heartbeat.beat()
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("The first heartbeat failed (%s); the heartbeat thread keeps trying", exc)
        self._heartbeat.start()
        LogCapture.install()
        try:
            self._runner.setup()
            self._check_memory_after_setup()
        except SetupFailed as exc:
            self._heartbeat.stop()
            self._report_setup_failure(str(exc))
            raise
        except BaseException:
            self._heartbeat.stop()
            self._queue.unregister(self.worker_id)
            raise
        self._set_state(WorkerState.READY)

    def _check_memory_after_setup(self) -> None:
        """A model that needs more memory than the bound once set up can never run."""
        limit = self.settings.worker_max_memory_mb
        used = resident_mb() if limit else None
        if used is not None and used > limit:
            raise SetupFailed(
                f"after setup() of {self.definition.name} the worker uses {used:.0f} MB, "
                f"more than TUNGSTEN_WORKER_MAX_MEMORY_MB ({limit})"
            )

    def _report_setup_failure(self, message: str) -> None:
        """Leave a ``failed`` entry in the registry for a while, so ``/health`` shows why."""
        fields = dict(self._registry_fields(), state="failed", error=message)
        try:
            self._queue.heartbeat(self.worker_id, fields, ttl_s=FAILED_WORKER_VISIBLE_S)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("Could not report the failed setup in the registry: %s", exc)

    def run(self) -> None:
        """Serve until ``stop()``; then finish the running batch and hand back the rest."""
        self._listener.start()
        self._writer.start()
        if self._runner.has_file_inputs:
            self._preparer = Preparer(self._runner.files.fetch, self._buffer.mark_ready, on_failure=self._thread_failed)
            self._preparer.start()
        self._reader.start()
        self._reaper.start()
        if self._memory_guard is not None:
            self._memory_guard.start()
        logger.info("Worker %s ready: model %s, batch size %d", self.worker_id, self.model_name, self.batch_size)
        graceful = False
        try:
            while not self._stopping.is_set():
                if not self._heartbeat.current(0.5):
                    # Presumed dead in Redis (cut off, or stopped): what it holds may be
                    # running elsewhere by now. Start nothing until the heartbeat stands
                    # again; then the start script tells which entries are still its own.
                    continue
                batch = self._buffer.take(self.max_batch_size, timeout_s=0.5, wait_s=self.settings.batch_wait_ms / 1000)
                self._writer.results(self._buffer.take_expired())
                if batch is not None:
                    self._reader.room_made()
                    self._run_batch(batch)
            graceful = True
        finally:
            self._shutdown(finish_started=graceful)
            self._cancel_watchdog()

    def run_burst(self) -> None:
        """Process everything queued now, then return (a test and batch-job seam).

        Reads and writes happen inline, so batch composition depends only on what
        was queued, never on timing.
        """
        self._listener.start()
        self._listener.subscribed.wait(5)
        self._writer.start()
        try:
            while True:
                entries = self._queue.read(self.worker_id, max(self.batch_size * 4, 16), None)
                if entries:
                    self._on_entries(entries)
                batch = self._buffer.take(self.max_batch_size, timeout_s=0)
                self._writer.results(self._buffer.take_expired())
                if batch is None and not entries:
                    break
                while batch is not None:
                    self._run_batch(batch)
                    self._writer.flush(30)
                    batch = self._buffer.take(self.max_batch_size, timeout_s=0)
                    self._writer.results(self._buffer.take_expired())
        finally:
            self._writer.flush(30)
            self._stop_threads()
            self._flush_metrics()
            self._queue.unregister(self.worker_id)

    def stop(self) -> None:
        """Ask the worker to stop after its current batch (safe from signal handlers)."""
        self._stopping.set()
        self._buffer.close()

    def _thread_failed(self, thread: SupervisedThread, exc: BaseException) -> None:
        """One of the Redis threads died (it logged why): stop after the running batch,
        hand back and write what can be, and exit with ``EXIT_THREAD_FAILED`` so that a
        fresh worker replaces this one. A watchdog ends the process if stopping hangs."""
        if not self._leave(EXIT_THREAD_FAILED, self.settings.shutdown_grace_s + 10):
            return
        logger.critical("Stopping worker %s: its %s thread died", self.worker_id, thread.name)

    def _leave(self, code: int, fuse_s: float) -> bool:
        """Stop, and exit with ``code``; the process ends after ``fuse_s`` if stopping hangs.
        False (and nothing done) when the worker is already leaving with another code."""
        with self._exit_lock:
            if self.exit_code:
                return False
            self.exit_code = code
            self.stop()
            self._watchdog = threading.Timer(fuse_s, os._exit, args=(code,))
            self._watchdog.daemon = True
            self._watchdog.start()
            return True

    def _cancel_watchdog(self) -> None:
        """The worker stopped in time."""
        with self._exit_lock:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            if self._stopping.is_set():
                raise KeyboardInterrupt
            logger.info("Worker %s stopping (%s)", self.worker_id, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _shutdown(self, finish_started: bool) -> None:
        """Hand back the entries not started, finish those started, write every result."""
        self._set_state(WorkerState.STOPPING)
        self._reader.stop()
        self._reader.join(timeout=5)
        handed_back = self._buffer.drain()
        try:
            if handed_back:
                moved = self._queue.requeue(self.worker_id, handed_back)
                logger.info("Handed %d unstarted entries back to the queue", moved)
        except REDIS_ERRORS as exc:
            logger.warning("Could not hand back %d entries (%s); they wait for redelivery", len(handed_back), exc)
        # What is left was split across batches (larger than a batch): finish it, so
        # that no input whose output was produced runs again elsewhere.
        while finish_started and (batch := self._buffer.take(self.max_batch_size, timeout_s=0)) is not None:
            self._run_batch(batch)
        if not self._writer.flush(self.settings.shutdown_grace_s):
            logger.warning("Some results could not be written before stopping; they will be redelivered")
        self._stop_threads()
        self._flush_metrics()
        try:
            self._queue.unregister(self.worker_id)
        except REDIS_ERRORS as exc:
            logger.warning("Could not unregister (%s); the heartbeat expires instead", exc)

    def _flush_metrics(self) -> None:
        """Send what the heartbeat had not sent yet (its last report, then the rest)."""
        try:
            self._heartbeat.send_metrics()
            self._heartbeat.send_metrics()
        except REDIS_ERRORS as exc:
            logger.warning("The last metrics could not be sent: %s", exc)

    def _stop_threads(self) -> None:
        threads = (self._reaper, self._writer, self._listener, self._heartbeat, self._reader)
        for extra in (self._preparer, self._memory_guard):
            if extra is not None:
                extra.stop()
        for thread in threads:
            thread.stop()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=5)

    # -- the model thread ------------------------------------------------------------
    def _run_batch(self, batch: Batch) -> None:
        ended = self._ended.among(batch.prediction_ids)
        if ended:
            self._writer.results(self._buffer.end_in_batch(batch, ended))
        batch, dropped = self._buffer.without_ended(batch)
        self._writer.results(dropped)
        if not batch.slices:
            return
        prediction_ids = batch.prediction_ids
        with self._current_lock:
            self._current = batch
        self._set_state(WorkerState.BUSY)
        self._buffer.mark_started(batch, now_iso())
        if any(s.work.entry.redelivered for s in batch.slices):
            self._announce_start_now(batch)
        else:
            self._writer.started(batch.batch_id, functools.partial(batch.start_record, time.time()))
        if logger.isEnabledFor(TRACE):
            logger.log(
                TRACE,
                "Batch %d: %d inputs from %d predictions",
                batch.batch_id,
                len(batch),
                len(prediction_ids),
                extra={"batch_id": batch.batch_id, "batch_size": len(batch), "prediction_ids": prediction_ids},
            )
        began = time.perf_counter()
        out_of_memory_before = self._out_of_memory_batches
        try:
            outcomes = self._execute(batch)
        finally:
            with self._current_lock:
                self._current = None
            self._set_state(WorkerState.READY)
        if self._out_of_memory_batches == out_of_memory_before:
            self._fitted(len(batch))
        record_batch(self._metrics, len(batch), time.perf_counter() - began)
        self.batches_run += 1
        self.inputs_run += len(batch)
        self._writer.batch_ended(
            batch.batch_id, functools.partial(self._buffer.record, outcomes), self._buffer.buffered_inputs > 0
        )

    def _announce_start_now(self, batch: Batch) -> None:
        """Record the start before running an entry that was running when a worker died.

        Starts are normally written a moment after the model begins (see
        ``Writer.started``); an input that kills workers would die before that, and its
        deaths would go uncounted. This rare case waits for Redis instead.
        """
        try:
            report = self._queue.write(self.worker_id, [batch.start_record()], [])
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("Could not record the start of batch %d: %s", batch.batch_id, exc)
            return
        if report.ended_before_start[0]:
            self._on_batch_predictions_ended(batch.batch_id, report.ended_before_start[0])
        if report.lost[0]:
            self._on_batch_entries_lost(batch.batch_id, report.lost[0])

    def _execute(self, batch: Batch) -> list[SliceOutcome]:
        """Run a batch; if ``predict`` raises, find which inputs fail on their own."""
        try:
            outputs = self._runner.predict(batch.batch_id, batch.inputs, batch.fetched, self._said(batch))
            return SliceOutcome.of_batch(batch, outputs, None)
        except PredictionInterrupted as exc:
            logger.info(
                "Batch %d interrupted (%s)", batch.batch_id, describe_exception(exc), extra=_batch_context(batch)
            )
            return SliceOutcome.of_batch(batch, None, describe_exception(exc))
        except Exception as exc:  # noqa: BLE001 - whatever the model raises fails its batch, not the worker
            error = self._describe_failure(batch, exc)
            out_of_memory = is_out_of_memory(exc)
        # Out of the ``except`` block: the exception's frames (and the tensors they hold) are freed.
        try:
            if out_of_memory:
                fitted: list[int] = []
                outcomes = self._run_within_memory(batch, error, fitted)
                if fitted:
                    self._lower_ceiling(len(batch), max(fitted))
                return outcomes
            return self._isolate(batch, error)
        except PredictionInterrupted as exc:
            return SliceOutcome.of_batch(batch, None, describe_exception(exc))

    def _run_within_memory(self, batch: Batch, error: str, fitted: list[int]) -> list[SliceOutcome]:
        """Run a batch that ran out of memory again, in halves, down to single inputs;
        only the inputs that run out of memory alone fail. The sizes that fit are added
        to ``fitted``."""
        if len(batch) == 1:
            return SliceOutcome.of_batch(batch, None, error)
        outcomes: list[SliceOutcome] = []
        for half in batch.split():
            free_accelerator_memory()
            failure: str | None = None
            try:
                outputs = self._runner.predict(batch.batch_id, half.inputs, half.fetched, self._said(half))
            except PredictionInterrupted:
                raise
            except Exception as exc:  # noqa: BLE001 - as in ``_execute``, for each half
                failure, out_of_memory = self._describe_failure(half, exc), is_out_of_memory(exc)
            if failure is None:
                fitted.append(len(half))
                outcomes += SliceOutcome.of_batch(half, outputs, None)
            elif out_of_memory:
                outcomes += self._run_within_memory(half, failure, fitted)
            else:
                outcomes += self._isolate(half, failure)
        return outcomes

    def _fitted(self, size: int) -> None:
        """A batch of ``size`` ran without running out of memory: under a ceiling, count
        full batches, and after enough of them probe upward (double the ceiling, up to the
        batch size). A probe that runs out of memory is split like any batch and sets the
        ceiling again, and the next probe waits twice as long, so a GPU that is truly full
        costs one split every ``_probe_after`` batches, never a loop."""
        if self.batch_ceiling is None:
            return
        if self._probing and size > self.batch_ceiling // 2:
            self._probing = False  # the raised ceiling held
            self._probe_after = CEILING_PROBE_BATCHES
        if size < self.batch_ceiling:
            return
        self._fit_at_ceiling += 1
        if self._fit_at_ceiling < self._probe_after:
            return
        raised = min(self.batch_size, self.batch_ceiling * 2)
        logger.info(
            "%d batches of %d inputs fit: trying batches of up to %d inputs again",
            self._fit_at_ceiling,
            self.batch_ceiling,
            raised,
        )
        self.batch_ceiling = None if raised >= self.batch_size else raised
        self._fit_at_ceiling = 0
        self._probing = True

    def _lower_ceiling(self, failed_size: int, size: int) -> None:
        """A batch of ``failed_size`` ran out of memory, and parts of it as large as ``size`` fit."""
        self._out_of_memory_batches += 1
        self._fit_at_ceiling = 0
        if self._probing:  # the last raise was too much: wait longer before the next
            self._probe_after = min(self._probe_after * 2, MAX_CEILING_PROBE_BATCHES)
            self._probing = False
        self.batch_ceiling = size
        logger.warning(
            "A batch of %d inputs ran out of memory and one of %d fit: batches hold at most %d inputs from now on",
            failed_size,
            size,
            size,
        )

    def _isolate(self, batch: Batch, error: str) -> list[SliceOutcome]:
        """Bisect a failed batch so that only the predictions holding a bad input fail.

        When both halves fail as the whole did, the fault is not one input's (a broken
        model, say): the batch fails without further splitting.
        """
        if len(batch) == 1:
            return SliceOutcome.of_batch(batch, None, error)
        halves = batch.split()
        tries: list[tuple[list[InputOutcome] | None, str | None]] = []
        for half in halves:
            try:
                tries.append((self._runner.predict(batch.batch_id, half.inputs, half.fetched, self._said(half)), None))
            except PredictionInterrupted:
                raise
            except Exception as exc:  # noqa: BLE001 - as above, for each half
                tries.append((None, self._describe_failure(half, exc)))
        if all(failure == error for _, failure in tries):
            return SliceOutcome.of_batch(batch, None, error)
        outcomes: list[SliceOutcome] = []
        for half, (outputs, failure) in zip(halves, tries):
            if failure is None:
                outcomes += SliceOutcome.of_batch(half, outputs, None)
            else:
                outcomes += self._isolate(half, failure)
        return outcomes

    def _said(self, batch: Batch) -> BatchEvents:
        """Where the model's partial outputs, progress and logs for ``batch`` go."""
        return BatchEvents(functools.partial(_targets, batch), self._writer.events)

    def _describe_failure(self, batch: Batch, exc: Exception) -> str:
        if isinstance(exc, InvalidOutput):
            logger.error("Batch %d (%d inputs): %s", batch.batch_id, len(batch), exc, extra=_batch_context(batch))
            return f"InvalidOutput: {exc}"
        logger.exception(
            "predict raised on batch %d (%d inputs)", batch.batch_id, len(batch), extra=_batch_context(batch)
        )
        return describe_exception(exc)

    # -- callbacks from the Redis threads ----------------------------------------------
    def _wanted_inputs(self) -> int:
        if self._writer.failing:
            # Redis refuses results for now: read no more work than is already held.
            return 0
        if self._preparer is not None and self._preparer.held_inputs >= max(
            MIN_BACKLOG_INPUTS, 4 * self.max_batch_size
        ):
            return 0
        return self.max_batch_size - self._buffer.buffered_inputs

    def _on_entries(self, entries: list[Entry]) -> None:
        works = []
        failed: list[EntryResult] = []
        for entry in entries:
            if entry.prediction_id in self._ended:
                failed.append(EntryResult(entry, EntryResult.DROPPED))
                continue
            try:
                inputs = self._runner.decode_inputs(entry.data)
            except (ValidationError, ValueError) as exc:
                failed.append(self._buffer.fail_entry(entry, f"Invalid input: {exc}"))
                continue
            if len(inputs) != entry.count:
                failed.append(self._buffer.fail_entry(entry, "Invalid input: entry size mismatch"))
                continue
            works.append(Work(entry, inputs))
        downloads = []
        preparer = self._preparer
        if preparer is not None:
            for work in works:
                if urls := remote_urls(work.inputs):
                    work.ready = False
                    downloads.append((work, urls))
        self._buffer.put(works)
        for work, urls in downloads:
            if preparer is not None:
                preparer.submit(work, urls)
        self._writer.results(failed)

    def _on_wait_started(self, message: str) -> None:
        """Work started waiting for admission: the reader has what this worker read ahead
        and must not run first step aside for it, before it reads again."""
        started = self._queue.wait_started(message)
        if started is not None:
            self._reader.step_aside_for(started)

    def _step_aside(self, started: WaitStarted) -> None:
        """Hand back the entries read ahead, not started, that ``started`` outranks (on the
        reader thread): its work is admitted ahead of them. Batches cannot take them
        meanwhile; those the queue did not take back stay and run."""
        offered = self._buffer.set_aside(started.outranks)
        if not offered:
            return
        gone: set[str] = set()
        try:
            gone = self._queue.step_aside(self.worker_id, started, [w.entry for w in offered])
        finally:
            self._buffer.settle(offered, gone)
        if gone:
            logger.debug("%d entries read ahead stepped aside for %s", len(gone), started.stream)

    def _on_predictions_stopped(self, prediction_ids: set[str]) -> None:
        self._ended.add(prediction_ids)
        self._writer.results(self._buffer.drop_predictions(prediction_ids))
        self._interrupt_if_all_ended(prediction_ids)

    def _on_batch_predictions_ended(self, batch_id: int, prediction_ids: set[str]) -> None:
        """The batch had started for predictions that were already over."""
        self._ended.add(prediction_ids)
        self._writer.results(self._buffer.drop_predictions(prediction_ids))
        self._interrupt_if_all_ended(prediction_ids)

    def _on_batch_entries_lost(self, batch_id: int, sids: set[str]) -> None:
        """Another worker took over entries of this batch (this one was presumed dead
        while it was paused): they are its to run, so this worker drops them."""
        logger.warning(
            "%d entries of batch %d were taken over by another worker while this one was unresponsive; dropping them",
            len(sids),
            batch_id,
        )
        self._writer.results(self._buffer.drop_entries(sids))
        with self._current_lock:
            batch = self._current
            if batch is None or not sids.intersection(batch.sids):
                return
            self._writer.results(self._buffer.end_in_batch(batch, sids=sids))
            if all(s.work.ended for s in batch.slices):
                logger.info("Every entry of batch %d was taken over: interrupting it", batch.batch_id)
                self._runner.cancel(batch.batch_id)

    def _interrupt_if_all_ended(self, prediction_ids: set[str]) -> None:
        with self._current_lock:
            batch = self._current
            if batch is None or not prediction_ids.intersection(batch.prediction_ids):
                return
            self._writer.results(self._buffer.end_in_batch(batch, prediction_ids))
            if all(s.work.ended for s in batch.slices):
                logger.info("Every prediction in batch %d ended: interrupting it", batch.batch_id)
                self._runner.cancel(batch.batch_id)

    def _on_model_stuck(self, call_id: int) -> None:
        """The model overran its timeout and never came back to Python: fail its batch
        with ``Timeout`` and leave, so the supervisor starts a fresh worker."""
        code = EXIT_SETUP_FAILED if self._state is WorkerState.SETUP else EXIT_STUCK
        logger.error("The model did not return to Python after a timeout; replacing this worker")
        self._fail_batch_and_exit(PredictionTimeout.client_message, code)

    def _on_memory_exceeded(self, used_mb: float) -> None:
        """The worker passed its memory bound: fail the running batch's predictions with
        the reason, interrupt it, and stop (handing back what it had not started) with
        ``EXIT_MEMORY_EXCEEDED``, so that the supervisor starts a fresh worker. If the
        model does not come back to Python within ``MEMORY_EXIT_FUSE_S``, the process
        ends there (its entries are released to the other workers, as for a crash)."""
        limit = self.settings.worker_max_memory_mb
        logger.error(
            "The worker uses %.0f MB, more than TUNGSTEN_WORKER_MAX_MEMORY_MB (%d); failing its batch and replacing it",
            used_mb,
            limit,
        )
        if not self._leave(EXIT_MEMORY_EXCEEDED, MEMORY_EXIT_FUSE_S):
            return  # already leaving (a thread died): that exit stands
        message = (
            f"MemoryLimitExceeded: the worker running this input used more than {limit} MB "
            "(TUNGSTEN_WORKER_MAX_MEMORY_MB) and was replaced"
        )
        with self._current_lock:
            batch = self._current
            if batch is not None:
                self._writer.results(self._buffer.fail_in_batch(batch, message))
                self._runner.cancel(batch.batch_id)
        self._writer.flush(MEMORY_EXIT_FUSE_S)

    def _fail_batch_and_exit(self, message: str, code: int) -> None:
        batch = self._running()
        if batch is not None:
            self._writer.results(self._buffer.finish(batch, None, message))
            self._writer.flush(5)
        os._exit(code)

    def _running(self) -> Batch | None:
        """The batch the model thread is running, if any (read under ``_current_lock``)."""
        with self._current_lock:
            return self._current

    def _held_sids(self) -> set[str]:
        """Entries this worker knows about: buffered, running, or with results to write."""
        current = self._running()
        running = set(current.sids) if current else set()
        return self._buffer.held_sids() | running | self._writer.pending_sids()

    # -- registry --------------------------------------------------------------------
    def _set_state(self, state: WorkerState) -> None:
        previous, self._state = self._state, state
        # Announce becoming ready or stopping at once; busy/ready flips wait for the next beat.
        lifecycle = state is WorkerState.STOPPING or (state is WorkerState.READY and previous is WorkerState.SETUP)
        if lifecycle and self._heartbeat.is_alive():
            self._heartbeat.wake()

    def _registry_fields(self) -> dict[str, str]:
        current = self._running()
        fields = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "model": self.model_name,
            "state": self._state.value,
            "batch_size": str(self.batch_size),
            "max_batch_size": str(self.max_batch_size),
            "current_batch": str(len(current) if current else 0),
            "batches": str(self.batches_run),
            "inputs": str(self.inputs_run),
            "started_at": self.started_at,
            "heartbeat_at": now_iso(),
            "heartbeat_unix": f"{time.time():.3f}",
            "inputs_per_s": f"{self._throughput.rate(self.inputs_run):.3f}",
        }
        gpus = gpu_memory()
        if gpus:
            fields["gpus"] = json.dumps(gpus)
        return fields


class EndedPredictions:
    """Ids of predictions known to have ended (the newest ``limit``), shared by the
    reader, writer, listener and model threads behind one lock."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        self._limit = limit

    def add(self, prediction_ids: Iterable[str]) -> None:
        with self._lock:
            for prediction_id in prediction_ids:
                if prediction_id not in self._ids:
                    self._ids.add(prediction_id)
                    self._order.append(prediction_id)
            while len(self._order) > self._limit:
                self._ids.discard(self._order.popleft())

    def __contains__(self, prediction_id: object) -> bool:
        with self._lock:
            return prediction_id in self._ids

    def among(self, prediction_ids: Iterable[str]) -> set[str]:
        """Those of ``prediction_ids`` that ended."""
        with self._lock:
            return self._ids.intersection(prediction_ids)


def _targets(batch: Batch) -> list[tuple[str, int]]:
    """The prediction and input index of each of the batch's inputs, in order."""
    return [
        (s.work.entry.prediction_id, s.work.entry.start + s.offset + k) for s in batch.slices for k in range(s.count)
    ]


def _batch_context(batch: Batch) -> dict[str, Any]:
    """``extra=`` for log lines about a batch (fields of JSON logs)."""
    return {"batch_id": batch.batch_id, "batch_size": len(batch), "prediction_ids": batch.prediction_ids}
