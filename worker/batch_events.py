"""What a model says while it runs a batch: partial outputs (a generator's yields),
progress (``tungstenkit.progress``) and logs (what it prints, and its ``logging``).

The model thread only notes them (cheap, no Redis, no serialisation); the writer
thread serialises them and writes them, coalesced, in its next round trip.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from tungstenkit._progress import set_reporter

if TYPE_CHECKING:
    from typing_extensions import Self

#: Kinds of ``Said``.
OUTPUT, PROGRESS, LOG = "output", "progress", "log"


@dataclass(frozen=True)
class Said:
    """One thing the model said, for one prediction: partial outputs as ``(input index,
    output)`` pairs (objects the writer serialises, or JSON strings), a progress JSON
    object, or log text."""

    prediction_id: str
    kind: str
    payload: Any


Sink = Callable[[list[Said]], None]


class BatchEvents:
    """The events of one call into the model, for the predictions of its inputs.

    ``targets()`` gives the prediction and input index of each of the call's inputs; it
    is called only once the model says something (a model that never does costs nothing).
    """

    def __init__(self, targets: Callable[[], Sequence[tuple[str, int]]], sink: Sink) -> None:
        self._make_targets = targets
        self._found: Sequence[tuple[str, int]] | None = None
        self._ids: list[str] | None = None
        self._sink = sink
        self._token: object = None

    @property
    def _targets(self) -> Sequence[tuple[str, int]]:
        if self._found is None:
            self._found = self._make_targets()
        return self._found

    @property
    def _predictions(self) -> list[str]:
        if self._ids is None:
            self._ids = list(dict.fromkeys(prediction_id for prediction_id, _ in self._targets))
        return self._ids

    def outputs(self, partial: Sequence[tuple[int, Any]]) -> None:
        """New partial outputs: ``(position in the call's inputs, output)`` pairs."""
        by_prediction: dict[str, list[tuple[int, Any]]] = {}
        for position, output in partial:
            prediction_id, index = self._targets[position]
            by_prediction.setdefault(prediction_id, []).append((index, output))
        if by_prediction:
            self._sink([Said(p, OUTPUT, pairs) for p, pairs in by_prediction.items()])

    def progress(self, step: int, total: int, message: str) -> None:
        data = json.dumps({"step": step, "total": total, "message": message}, separators=(",", ":"))
        self._sink([Said(p, PROGRESS, data) for p in self._predictions])

    def log(self, text: str) -> None:
        if text:
            self._sink([Said(p, LOG, text) for p in self._predictions])

    def __enter__(self) -> Self:
        """Route progress and the model thread's output here while the call runs (a
        plain ``with``: this runs for every batch, so it stays cheap)."""
        set_reporter(self.progress)
        self._token = LogCapture.target(self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        LogCapture.target(None, self._token)
        set_reporter(None)


class _Tee(io.TextIOBase):
    """A stand-in for ``sys.stdout``/``sys.stderr``: everything still reaches the real
    stream (the worker's log), and what the model thread writes during a batch is also
    handed to that batch."""

    def __init__(self, real: TextIO, capture: LogCapture) -> None:
        self._real = real
        self._capture = capture

    def write(self, text: str) -> int:
        self._capture.captured(text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return self._real.isatty()

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase's is read-only: a property it must be
        return getattr(self._real, "encoding", "utf-8")


class _Handler(logging.Handler):
    """Hands the model thread's log records during a batch to that batch."""

    def __init__(self, capture: LogCapture) -> None:
        super().__init__()
        self._capture = capture
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self._capture.capturing():
            try:
                self._capture.captured(self.format(record) + "\n")
            except Exception:  # noqa: BLE001 - logging must never fail the model
                self.handleError(record)


class LogCapture:
    """Captures the model thread's prints and log records while a batch runs (installed
    once per worker process). Output written by C code straight to the file descriptors
    is not seen."""

    _installed: LogCapture | None = None

    def __init__(self) -> None:
        self._thread: int | None = None
        self._target: Callable[[str], None] | None = None
        self._inside = threading.local()

    @classmethod
    def install(cls) -> LogCapture:
        if cls._installed is None:
            capture = cls._installed = cls()
            sys.stdout = _Tee(sys.stdout, capture)
            sys.stderr = _Tee(sys.stderr, capture)
            logging.getLogger().addHandler(_Handler(capture))
        return cls._installed

    @classmethod
    def target(cls, target: Callable[[str], None] | None, token: object = None) -> object:
        """Send the calling thread's output to ``target`` (None: stop); returns what to
        pass back when stopping."""
        capture = cls._installed
        if capture is None:
            return None
        previous = (capture._thread, capture._target)
        if target is None:
            capture._thread, capture._target = token if isinstance(token, tuple) else (None, None)
        else:
            capture._thread, capture._target = threading.get_ident(), target
        return previous

    def capturing(self) -> bool:
        return self._target is not None and threading.get_ident() == self._thread

    def captured(self, text: str) -> None:
        target = self._target
        if target is None or threading.get_ident() != self._thread or getattr(self._inside, "on", False):
            return
        # A record logged while handing text over (by the writer's lock, say) is not captured again.
        self._inside.on = True
        try:
            target(text)
        finally:
            self._inside.on = False
