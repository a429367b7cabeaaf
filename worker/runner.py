"""Running the user's model: setup, predict on a batch, outputs checked and serialised.

The model runs on the main thread so that a signal can interrupt it: cancel and
timeout raise inside ``predict`` at the next point where it returns to Python.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from tungstenkit._errors import InvalidOutput, PredictionCanceled, PredictionInterrupted, SetupFailed
from tungstenkit._files import FILE_POLICY, OUTPUT_FILE_SINK, FilePolicy, materialize_files_in
from tungstenkit._media import configure_pillow
from tungstenkit._model import ModelDefinition, has_file_fields
from tungstenkit._prepare import FileFailure, prepare_inputs
from tungstenkit._settings import Settings
from worker.outcome import InputFailure, InputOutcome
from worker.outputs import OutputFileSink

logger = logging.getLogger(__name__)

INTERRUPT_SIGNAL = signal.SIGUSR1


def describe_exception(exc: BaseException) -> str:
    """The concise ``ExceptionType: message`` clients see; tracebacks go to the log."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ModelRunner:
    """One instance of the user's model, driven from the main thread."""

    def __init__(self, definition: ModelDefinition, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.definition = definition
        self.files = FilePolicy.from_settings(settings)
        self._output_links = settings.output_files == "url"
        self._public_url = settings.public_url
        self._has_file_inputs = has_file_fields(definition.input_cls)
        if self._has_file_inputs:
            configure_pillow(self.files.max_image_pixels)
        self._model: Any = None
        self._inputs_adapter = TypeAdapter(list[definition.input_cls])  # type: ignore[name-defined]
        self._running_batch: int | None = None
        self._interrupt: tuple[int, type[PredictionInterrupted]] | None = None
        self._main_thread = threading.main_thread().ident

    @property
    def model(self) -> Any:
        """The user's model instance (after ``setup``)."""
        return self._model

    def setup(self) -> None:
        try:
            self._model = self.definition.cls()
            self._model.setup()
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

    def interrupt(self, batch_id: int, reason: type[PredictionInterrupted] = PredictionCanceled) -> None:
        """Stop ``predict`` of ``batch_id`` if it is still running (from any thread)."""
        self._interrupt = (batch_id, reason)
        if self._running_batch == batch_id and self._main_thread is not None:
            signal.pthread_kill(self._main_thread, INTERRUPT_SIGNAL)

    def _on_interrupt_signal(self, signum: int, frame: Any) -> None:
        pending = self._interrupt
        if pending is not None and self._running_batch is not None and pending[0] == self._running_batch:
            self._interrupt = None
            raise pending[1]()

    @contextlib.contextmanager
    def batch_folder(self, batch_id: int) -> Iterator[Path]:
        """A temporary folder for the batch's files (``.path``, downloads), removed at the end however it ends."""
        folder = Path(tempfile.mkdtemp(prefix=f"tungsten-batch{batch_id}-"))
        try:
            with materialize_files_in(folder, self.files):
                yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def prepare(self, inputs: list[Any]) -> dict[int, FileFailure]:
        """Download URL inputs into the batch's folder and finish masks; the inputs that cannot run."""
        return prepare_inputs(inputs, self.files)

    def predict(self, batch_id: int, inputs: list[Any]) -> list[InputOutcome]:
        """Run one batch; returns each input's output as a JSON object string, or why it could not run.

        File inputs are made ready first (URLs downloaded); an input whose file failed
        is left out of ``predict`` and reported alone. Raises ``PredictionInterrupted``
        when interrupted, ``InvalidOutput`` when the model breaks its contract, and
        whatever ``predict`` raised otherwise.
        """
        with self.batch_folder(batch_id):
            self._running_batch = batch_id
            try:
                if self._interrupt is not None and self._interrupt[0] == batch_id:
                    raise self._interrupt[1]()
                failures = self.prepare(inputs) if self._has_file_inputs else {}
                ready = [item for index, item in enumerate(inputs) if index not in failures]
                outputs = self._model.predict(ready) if ready else []
            finally:
                self._running_batch = None
            serialized = iter([self._serialize(item) for item in self.check_outputs(outputs, len(ready))])
            return [
                _failed(failures[index]) if index in failures else next(serialized) for index in range(len(inputs))
            ]

    def _serialize(self, output: BaseModel) -> InputOutcome:
        if not self._output_links:
            return InputOutcome(output=output.model_dump_json())
        sink = OutputFileSink(self._public_url)
        return InputOutcome(output=output.model_dump_json(context={OUTPUT_FILE_SINK: sink}), files=tuple(sink.files))

    def check_outputs(self, outputs: Any, expected: int) -> list[Any]:
        """``predict``'s return value as a list of output objects; ``InvalidOutput`` if it is not."""
        output_cls = self.definition.output_cls
        try:
            items = list(outputs)
        except TypeError:
            raise InvalidOutput(f"predict must return a list of {output_cls.__name__}, got {type(outputs).__name__}") from None
        if len(items) != expected:
            raise InvalidOutput(f"predict returned {len(items)} outputs for {expected} inputs")
        checked = []
        for item in items:
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
