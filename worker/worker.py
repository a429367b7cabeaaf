"""A worker process: loads the model once, then runs batches cut from the shared queue."""

from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any

import redis
from pydantic import ValidationError

from tungstenkit._errors import InvalidOutput, PredictionInterrupted
from tungstenkit._logging import TRACE
from tungstenkit._model import ModelDefinition
from tungstenkit._queue import CONNECTION_ERRORS, Entry, EntryResult, Keys, WorkerQueue, now_iso
from tungstenkit._settings import Settings
from worker.buffer import Batch, BatchBuffer, Work
from worker.io import Heartbeat, Reader, StopListener, Writer
from worker.outcome import InputOutcome
from worker.runner import ModelRunner, describe_exception

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
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.batch_size = batch_size or definition.config.batch_size
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.model_name = model_name or definition.name
        self._client = client
        self._queue = WorkerQueue(client, keys, result_ttl_s=settings.result_ttl_s)
        self._keys = keys
        self._runner = ModelRunner(definition, settings)
        self._buffer = BatchBuffer()
        self._state = WorkerState.STARTING
        self._stopping = threading.Event()
        self._current: Batch | None = None
        self._current_lock = threading.Lock()
        # Predictions known to have ended, so entries read later are dropped unrun.
        self._ended_ids: set[str] = set()
        self._ended_order: deque[str] = deque()
        self.batches_run = 0
        self.inputs_run = 0
        self.started_at = now_iso()
        self._writer = Writer(self._queue, self._on_batch_predictions_ended)
        self._reader = Reader(self._queue, self.worker_id, self._wanted_inputs, self._on_entries)
        self._listener = StopListener(client, keys.stop_channel, self._on_predictions_stopped)
        self._heartbeat = Heartbeat(self._queue, self.worker_id, self._registry_fields, settings.heartbeat_interval_s)

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id} state={self._state.value} batches={self.batches_run} "
            f"inputs={self.inputs_run} buffered={self._buffer.buffered_inputs}>"
        )

    @property
    def state(self) -> WorkerState:
        return self._state

    # -- lifecycle -------------------------------------------------------------------
    def setup(self) -> None:
        """Register, then run the model's ``setup()``; raises ``SetupFailed``."""
        self._queue.ensure_group()
        self._set_state(WorkerState.SETUP)
        self._heartbeat.beat()
        self._heartbeat.start()
        try:
            self._runner.setup()
        except BaseException:
            self._heartbeat.stop()
            self._queue.unregister(self.worker_id)
            raise
        self._set_state(WorkerState.READY)

    def run(self) -> None:
        """Serve until ``stop()``; then finish the running batch and hand back the rest."""
        self._runner.install_interrupt_handler()
        self._listener.start()
        self._writer.start()
        self._reader.start()
        logger.info("Worker %s ready: model %s, batch size %d", self.worker_id, self.model_name, self.batch_size)
        try:
            while not self._stopping.is_set():
                batch = self._buffer.take(self.batch_size, timeout_s=0.5, wait_s=self.settings.batch_wait_ms / 1000)
                if batch is not None:
                    self._reader.room_made()
                    self._run_batch(batch)
        finally:
            self._shutdown()

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
                batch = self._buffer.take(self.batch_size, timeout_s=0)
                if batch is None and not entries:
                    break
                while batch is not None:
                    self._run_batch(batch)
                    self._writer.flush(30)
                    batch = self._buffer.take(self.batch_size, timeout_s=0)
        finally:
            self._writer.flush(30)
            self._stop_threads()
            self._queue.unregister(self.worker_id)

    def stop(self) -> None:
        """Ask the worker to stop after its current batch (safe from signal handlers)."""
        self._stopping.set()
        self._buffer.close()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            if self._stopping.is_set():
                raise KeyboardInterrupt
            logger.info("Worker %s stopping (%s)", self.worker_id, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _shutdown(self) -> None:
        self._set_state(WorkerState.STOPPING)
        self._reader.stop()
        self._reader.join(timeout=5)
        handed_back = self._buffer.drain()
        try:
            if handed_back:
                moved = self._queue.requeue(handed_back)
                logger.info("Handed %d unstarted entries back to the queue", moved)
        except CONNECTION_ERRORS as exc:
            logger.warning("Could not hand back %d entries (%s); they wait for redelivery", len(handed_back), exc)
        if not self._writer.flush(self.settings.shutdown_grace_s):
            logger.warning("Some results could not be written before stopping; they will be redelivered")
        self._stop_threads()
        try:
            self._queue.unregister(self.worker_id)
        except CONNECTION_ERRORS:
            pass

    def _stop_threads(self) -> None:
        for thread in (self._writer, self._listener, self._heartbeat, self._reader):
            thread.stop()
        for thread in (self._writer, self._listener, self._heartbeat, self._reader):
            if thread.is_alive():
                thread.join(timeout=5)

    # -- the model thread ------------------------------------------------------------
    def _run_batch(self, batch: Batch) -> None:
        ended = self._ended_ids.intersection(batch.prediction_ids)
        if ended:
            self._writer.results(self._buffer.end_in_batch(batch, ended))
            batch = self._buffer.without_ended(batch)
            if not batch.slices:
                return
        prediction_ids = batch.prediction_ids
        with self._current_lock:
            self._current = batch
        self._set_state(WorkerState.BUSY)
        self._writer.started(batch.batch_id, prediction_ids)
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "Batch %d: %d inputs from %d predictions", batch.batch_id, len(batch), len(prediction_ids))
        inputs = batch.inputs
        outputs: list[InputOutcome] | None = None
        error: str | None = None
        try:
            outputs = self._runner.predict(batch.batch_id, inputs)
        except PredictionInterrupted as exc:
            error = describe_exception(exc)
            logger.info("Batch %d interrupted (%s)", batch.batch_id, type(exc).__name__)
        except InvalidOutput as exc:
            error = f"InvalidOutput: {exc}"
            logger.error("Batch %d: %s", batch.batch_id, exc)
        except Exception as exc:
            error = describe_exception(exc)
            logger.exception("predict raised on batch %d (%d inputs)", batch.batch_id, len(inputs))
        finally:
            with self._current_lock:
                self._current = None
            self._set_state(WorkerState.READY)
        self.batches_run += 1
        self.inputs_run += len(inputs)
        self._writer.results(self._buffer.finish(batch, outputs, error))

    # -- callbacks from the Redis threads ----------------------------------------------
    def _wanted_inputs(self) -> int:
        return self.batch_size - self._buffer.buffered_inputs

    def _on_entries(self, entries: list[Entry]) -> None:
        works = []
        failed: list[EntryResult] = []
        for entry in entries:
            if entry.prediction_id in self._ended_ids:
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
        self._buffer.put(works)
        self._writer.results(failed)

    def _on_predictions_stopped(self, prediction_ids: set[str]) -> None:
        self._remember_ended(prediction_ids)
        self._writer.results(self._buffer.drop_predictions(prediction_ids))
        self._interrupt_if_all_ended(prediction_ids)

    def _on_batch_predictions_ended(self, batch_id: int, prediction_ids: set[str]) -> None:
        """The batch had started for predictions that were already over."""
        self._remember_ended(prediction_ids)
        self._writer.results(self._buffer.drop_predictions(prediction_ids))
        self._interrupt_if_all_ended(prediction_ids)

    def _interrupt_if_all_ended(self, prediction_ids: set[str]) -> None:
        with self._current_lock:
            batch = self._current
            if batch is None or not prediction_ids.intersection(batch.prediction_ids):
                return
            self._writer.results(self._buffer.end_in_batch(batch, prediction_ids))
            if all(s.work.ended for s in batch.slices):
                logger.info("Every prediction in batch %d ended: interrupting it", batch.batch_id)
                self._runner.interrupt(batch.batch_id)

    def _remember_ended(self, prediction_ids: set[str]) -> None:
        for prediction_id in prediction_ids:
            if prediction_id not in self._ended_ids:
                self._ended_ids.add(prediction_id)
                self._ended_order.append(prediction_id)
        while len(self._ended_order) > 100_000:
            self._ended_ids.discard(self._ended_order.popleft())

    # -- registry --------------------------------------------------------------------
    def _set_state(self, state: WorkerState) -> None:
        previous, self._state = self._state, state
        # Announce becoming ready or stopping at once; busy/ready flips wait for the next beat.
        lifecycle = state is WorkerState.STOPPING or (state is WorkerState.READY and previous is WorkerState.SETUP)
        if lifecycle and self._heartbeat.is_alive():
            self._heartbeat.wake()

    def _registry_fields(self) -> dict[str, str]:
        current = self._current
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "model": self.model_name,
            "state": self._state.value,
            "batch_size": str(self.batch_size),
            "current_batch": str(len(current) if current else 0),
            "batches": str(self.batches_run),
            "inputs": str(self.inputs_run),
            "started_at": self.started_at,
            "heartbeat_at": now_iso(),
            "heartbeat_unix": f"{time.time():.3f}",
        }
