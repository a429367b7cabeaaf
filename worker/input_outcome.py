"""What became of one input of a batch: its output, or why it could not run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tungstenkit._queue import StoredFile


@dataclass(frozen=True)
class InputFailure:
    """An input that never reached ``predict`` (a file input was refused or failed to download)."""

    kind: str
    field: str
    reason: str

    def message(self, index: int) -> str:
        """The prediction's ``error_message``; ``index`` is the input's place in its request."""
        return f"{self.kind}: input {index}, field {self.field!r}: {self.reason}"


@dataclass(slots=True)  # not frozen: one is made per input, and frozen init is slow
class InputOutcome:
    #: The output as a JSON object string (None when the input failed or is not
    #: serialised yet).
    output: str | None = None
    failure: InputFailure | None = None
    #: Output files to store in Redis, linked from ``output`` (``output_files=url``).
    files: tuple[StoredFile, ...] = ()
    #: The output object, when its serialisation is left to the writer thread.
    raw: Any = None


def as_outcome(value: InputOutcome | str) -> InputOutcome:
    """Outcomes may also be given as bare output strings."""
    return value if isinstance(value, InputOutcome) else InputOutcome(output=value)
