"""Running the user's model: setup, predict on a batch, outputs checked and serialised.

The model runs on the main thread so that a signal can interrupt it: cancel and
timeout raise inside ``predict`` at the next point where it returns to Python.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tungstenkit._errors import InvalidOutput, PredictionCanceled, PredictionInterrupted, SetupFailed
from tungstenkit._files import materialize_files_in
from tungstenkit._model import ModelDefinition

logger = logging.getLogger(__name__)

INTERRUPT_SIGNAL = signal.SIGUSR1


def describe_exception(exc: BaseException) -> str:
    """The concise ``ExceptionType: message`` clients see; tracebacks go to the log."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ModelRunner:
    """One instance of the user's model, driven from the main thread."""

    def __init__(self, definition: ModelDefinition) -> None:
        self.definition = definition
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
        return self._inputs_adapter.validate_json(data)

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

    def predict(self, batch_id: int, inputs: list[Any]) -> list[str]:
        """Run one batch; returns each output as a JSON object string.

        Raises ``PredictionInterrupted`` when interrupted, ``InvalidOutput`` when the
        model breaks its contract, and whatever ``predict`` raised otherwise.
        """
        folder = Path(tempfile.mkdtemp(prefix=f"tungsten-batch{batch_id}-"))
        try:
            with materialize_files_in(folder):
                self._running_batch = batch_id
                try:
                    if self._interrupt is not None and self._interrupt[0] == batch_id:
                        raise self._interrupt[1]()
                    outputs = self._model.predict(inputs)
                finally:
                    self._running_batch = None
                return [item.model_dump_json() for item in self.check_outputs(outputs, len(inputs))]
        finally:
            shutil.rmtree(folder, ignore_errors=True)

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


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
