"""Running the user's model: setup, predict on a batch, outputs checked and serialised.

The model runs on the main thread so that a signal can interrupt it: cancel and
timeout raise inside ``predict`` at the next point where it returns to Python.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tungstenkit._base_io import BaseIO, list_adapter
from tungstenkit._errors import (
    FileInputError,
    InvalidOutput,
    PredictionCanceled,
    PredictionInterrupted,
    PredictionTimeout,
    SetupFailed,
)
from tungstenkit._fetch import Download
from tungstenkit._files import FILE_POLICY, OUTPUT_FILE_SINK, FilePolicy, materialize_files_in
from tungstenkit._media import configure_pillow
from tungstenkit._model import ModelDefinition, has_file_fields, mentions_files
from tungstenkit._prepare import FileFailure, prepare_inputs
from tungstenkit._settings import Settings
from tungstenkit.worker.batch_events import BatchEvents
from tungstenkit.worker.input_outcome import InputFailure, InputOutcome
from tungstenkit.worker.outputs import OutputFileSink

logger = logging.getLogger(__name__)

INTERRUPT_SIGNAL = signal.SIGUSR1
#: Seconds an overrunning call gets to return to Python after being interrupted:
#: the timeout itself, within these bounds.
_STUCK_GRACE_BOUNDS_S = (2.0, 10.0)
#: Exit code of a worker replaced because the model could not be interrupted.
EXIT_STUCK = 6


def describe_exception(exc: BaseException) -> str:
    """The concise ``ExceptionType: message`` clients see; tracebacks go to the log."""
    if isinstance(exc, PredictionInterrupted):
        return exc.client_message
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an accelerator ran out of memory: ``torch.cuda.OutOfMemoryError``
    (or any class named so, other frameworks' included), or the ``RuntimeError`` older
    torch versions raised. A host ``MemoryError`` is not: halving a batch rarely helps it."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and str(exc).startswith("CUDA out of memory")


def free_accelerator_memory() -> None:
    """Give the memory torch cached back to the GPU, before a batch is tried again smaller."""
    torch = sys.modules.get("torch")  # never imported here: only if the model uses it
    if torch is None:
        return
    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup must not fail the retry itself
        logger.warning("Could not empty the CUDA cache: %s", exc)


def _exit_stuck(call_id: int) -> None:
    logger.error("The model did not return to Python after a timeout; replacing this worker")
    os._exit(EXIT_STUCK)


class Watchdog(threading.Thread):
    """Times the model's calls: interrupts one that overruns, and reports one that
    cannot be interrupted (stuck outside Python) so the worker can be replaced."""

    def __init__(self, on_overrun: Callable[[int], None], on_stuck: Callable[[int], None], grace_s: float) -> None:
        super().__init__(name="tungsten-watchdog", daemon=True)
        self._on_overrun = on_overrun
        self._on_stuck = on_stuck
        self._grace = grace_s
        self._cond = threading.Condition()
        self._call: int | None = None
        self._deadline = 0.0
        self._overrun = False

    def watch(self, call_id: int, timeout_s: float) -> None:
        with self._cond:
            self._call, self._deadline, self._overrun = call_id, time.monotonic() + timeout_s, False
            self._cond.notify()

    def done(self) -> None:
        with self._cond:
            self._call = None

    def run(self) -> None:
        while True:
            with self._cond:
                while self._call is None or time.monotonic() < self._deadline:
                    self._cond.wait(None if self._call is None else self._deadline - time.monotonic())
                call, overrun = self._call, self._overrun
                # Interrupt once; if the call is still there after the grace time, it is stuck.
                self._overrun, self._deadline = True, time.monotonic() + self._grace
            if overrun:
                self._on_stuck(call)
                return
            self._on_overrun(call)


class ModelRunner:
    """One instance of the user's model, driven from the main thread.

    Calls into the model are numbered. A cancel interrupts every call of a batch (a
    batch may be retried in halves); a timeout interrupts one call.
    """

    def __init__(
        self,
        definition: ModelDefinition,
        settings: Settings | None = None,
        *,
        on_stuck: Callable[[int], None] | None = None,
    ) -> None:
        settings = settings or Settings()
        self.definition = definition
        self.files = FilePolicy.from_settings(settings)
        self._output_links = settings.output_files == "url"
        self._public_url = settings.public_url
        self.has_file_inputs = has_file_fields(definition.input_cls)
        # Outputs that cannot hold files need nothing from the batch's folder, so the
        # writer thread serialises them while the model runs the next batch.
        self._defer_serialization = not mentions_files(definition.output_cls)
        # A model whose inputs and outputs hold no files needs no batch folder at all.
        self._uses_files = self.has_file_inputs or not self._defer_serialization
        if self.has_file_inputs:
            configure_pillow(self.files.max_image_pixels)
        self._model: Any = None
        self._inputs_adapter = list_adapter(definition.input_cls)
        prediction_timeout_s = self._prediction_timeout = settings.prediction_timeout_s
        setup_timeout_s = self._setup_timeout = settings.setup_timeout_s
        self._calls = itertools.count(1)
        self._running_call: int | None = None
        self._running_batch: int | None = None
        self._canceled_batch: int | None = None
        self._overrun_call: int | None = None
        self._main_thread = threading.main_thread().ident
        self._watchdog: Watchdog | None = None
        if prediction_timeout_s > 0 or setup_timeout_s > 0:
            low, high = _STUCK_GRACE_BOUNDS_S
            grace = min(high, max(low, prediction_timeout_s or setup_timeout_s))
            self._watchdog = Watchdog(self._interrupt_call, on_stuck or _exit_stuck, grace_s=grace)
            self._watchdog.start()

    @property
    def model(self) -> Any:
        """The user's model instance (after ``setup``)."""
        return self._model

    def setup(self) -> None:
        """Instantiate the model and run its ``setup()``; ``SetupFailed`` if it raises or overruns."""
        try:
            with self._call(None, self._setup_timeout):
                self._model = self.definition.cls()
                self._model.setup()
        except PredictionTimeout:
            raise SetupFailed(
                f"setup() of {self.definition.name} did not finish within {self._setup_timeout:g}s"
            ) from None
        except Exception as exc:
            # The traceback is for debugging; the one-line reason is what the user sees.
            logger.debug("setup() of %s failed", self.definition.name, exc_info=True)
            raise SetupFailed(
                f"setup() of {self.definition.name} failed: {describe_exception(exc)} "
                "(--log-level debug shows the traceback)"
            ) from exc

    def decode_inputs(self, data: bytes) -> list[Any]:
        """Validate an entry's inputs; files may not refer to local paths (they came from Redis)."""
        return self._inputs_adapter.validate_json(data, context={FILE_POLICY: self.files})

    def install_interrupt_handler(self) -> None:
        signal.signal(INTERRUPT_SIGNAL, self._on_interrupt_signal)

    def cancel(self, batch_id: int) -> None:
        """Stop the calls of ``batch_id``, now and later (from any thread)."""
        self._canceled_batch = batch_id
        if self._running_batch == batch_id:
            self._signal_main_thread()

    def _interrupt_call(self, call_id: int) -> None:
        logger.warning("A call into the model ran past its timeout; interrupting it")
        self._overrun_call = call_id
        if self._running_call == call_id:
            self._signal_main_thread()

    def _signal_main_thread(self) -> None:
        if self._main_thread is not None:
            signal.pthread_kill(self._main_thread, INTERRUPT_SIGNAL)

    def _on_interrupt_signal(self, signum: int, frame: Any) -> None:
        if self._running_call is not None and self._overrun_call == self._running_call:
            self._overrun_call = None
            raise PredictionTimeout()
        if self._running_batch is not None and self._canceled_batch == self._running_batch:
            raise PredictionCanceled()

    @contextlib.contextmanager
    def _call(self, batch_id: int | None, timeout_s: float) -> Iterator[None]:
        call_id = next(self._calls)
        self._running_batch, self._running_call = batch_id, call_id
        if self._watchdog is not None and timeout_s > 0:
            self._watchdog.watch(call_id, timeout_s)
        try:
            yield
        finally:
            self._running_batch = self._running_call = None
            if self._watchdog is not None:
                self._watchdog.done()

    @contextlib.contextmanager
    def batch_folder(self, batch_id: int) -> Iterator[Path]:
        """A temporary folder for the batch's files (``.path``, downloads), removed at the end however it ends.

        It is only created if something writes a file there.
        """
        folder = Path(tempfile.gettempdir()) / f"tungsten-batch{batch_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with materialize_files_in(folder, self.files, transient=True):
                yield folder
        finally:
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    def prepare(
        self, inputs: list[Any], fetched: Mapping[str, Download | FileInputError] | None = None
    ) -> dict[int, FileFailure]:
        """Download URL inputs into the batch's folder (those not ``fetched`` already) and
        finish masks; the inputs that cannot run."""
        return prepare_inputs(inputs, self.files, fetched)

    def predict(
        self,
        batch_id: int,
        inputs: list[Any],
        fetched: Mapping[str, Download | FileInputError] | None = None,
        said: BatchEvents | None = None,
    ) -> list[InputOutcome]:
        """Run one batch; returns each input's output as a JSON object string, or why it could not run.

        File inputs are made ready first (URLs downloaded); an input whose file failed
        is left out of ``predict`` and reported alone. A ``predict`` that is a generator
        is run to its end, each yield's partial outputs going to ``said`` (with the
        progress it reports and what it prints). Raises ``PredictionInterrupted`` when
        canceled or overrunning (downloads included), ``InvalidOutput`` when the model
        breaks its contract, and whatever ``predict`` raised otherwise.
        """
        if self._canceled_batch == batch_id:
            raise PredictionCanceled()
        with self.batch_folder(batch_id) if self._uses_files else contextlib.nullcontext():
            with self._call(batch_id, self._prediction_timeout), said if said is not None else contextlib.nullcontext():
                failures = self.prepare(inputs, fetched) if self.has_file_inputs else {}
                ready = [item for index, item in enumerate(inputs) if index not in failures]
                outputs: Any = self._model.predict(ready) if ready else []
                if inspect.isgenerator(outputs):
                    positions = [index for index in range(len(inputs)) if index not in failures]
                    outputs = self.run_generator(batch_id, outputs, positions, said)
            checked = self.check_outputs(outputs, len(ready))
            if self._defer_serialization:
                serialized = iter([InputOutcome(raw=item) for item in checked])
            else:
                # Outputs may point into the batch's folder, removed when it ends.
                serialized = iter([self.serialize(item) for item in checked])
            return [_failed(failures[index]) if index in failures else next(serialized) for index in range(len(inputs))]

    def run_generator(
        self, batch_id: int, steps: Generator[Any, Any, Any], positions: list[int], said: BatchEvents | None
    ) -> Any:
        """Run a generator ``predict``: each yield is one partial output per input (None:
        nothing new for that input), handed to ``said`` at once; the return value, or
        else the last yield, is the final outputs. A cancel stops it between yields
        (if the signal did not already interrupt it)."""
        last: Any = None
        try:
            while True:
                if self._canceled_batch == batch_id:
                    raise PredictionCanceled()
                try:
                    step = next(steps)
                except StopIteration as stop:
                    final = stop.value if stop.value is not None else last
                    break
                partial = self.check_outputs(step, len(positions), partial=True)
                if said is not None:
                    said.outputs([(positions[i], self._partial(o)) for i, o in enumerate(partial) if o is not None])
                last = step
        finally:
            steps.close()
        if final is None:
            raise InvalidOutput("predict is a generator that yielded nothing and returned nothing")
        return final

    def _partial(self, output: BaseModel) -> Any:
        """A partial output as the writer thread takes it: the object itself, or its JSON
        at once when it may point into the batch's folder. Files in partial outputs are
        always data URIs (never stored for ``/files/``)."""
        return output if self._defer_serialization else output.model_dump_json()

    def serialize(self, output: BaseModel) -> InputOutcome:
        """An output as the JSON object clients get (links stored aside with ``output_files=url``)."""
        if not self._output_links:
            return InputOutcome(output=output.model_dump_json())
        sink = OutputFileSink(self._public_url)
        return InputOutcome(output=output.model_dump_json(context={OUTPUT_FILE_SINK: sink}), files=tuple(sink.files))

    def check_outputs(self, outputs: Any, expected: int, partial: bool = False) -> list[Any]:
        """``predict``'s return value as a list of output objects; ``InvalidOutput`` if it
        is not. A ``partial`` list (a generator's yield) may hold None."""
        output_cls = self.definition.output_cls
        try:
            items = list(outputs)
        except TypeError:
            raise InvalidOutput(
                f"predict must return a list of {output_cls.__name__}, got {type(outputs).__name__}"
            ) from None
        if len(items) != expected:
            raise InvalidOutput(
                f"predict {'yielded' if partial else 'returned'} {len(items)} outputs for {expected} inputs"
            )
        checked: list[BaseIO | None] = []
        for item in items:
            if partial and item is None:
                checked.append(None)
                continue
            try:
                if not isinstance(item, output_cls):
                    if not isinstance(item, dict):
                        raise InvalidOutput(
                            f"predict must return {output_cls.__name__} objects or dicts, got {type(item).__name__}"
                        )
                    item = output_cls.model_validate(item)
                checked.append(item)
            except ValidationError as exc:
                raise InvalidOutput(f"an output does not match {output_cls.__name__}: {_first_error(exc)}") from None
        return checked


def _failed(failure: FileFailure) -> InputOutcome:
    return InputOutcome(failure=InputFailure(type(failure.error).__name__, failure.field, str(failure.error)))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
