"""A prediction as the client sees it: ``GET /predictions/{id}``'s answer, outputs decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The statuses of a prediction that has ended.
ENDED = frozenset({"success", "failed"})
#: The ``error_message`` of a canceled prediction.
CANCELED_MESSAGE = "Canceled"


@dataclass(frozen=True)
class Prediction:
    """One prediction: its status and, once it succeeded, its outputs (one per input, in order).

    File outputs are ``tungstenkit`` file objects (``Image``, ``Audio``, ``Video``,
    ``Binary``) with ``.save(path)``, ``.read_bytes()`` and, for images, ``.to_pil_image()``.
    """

    id: str
    #: ``pending``, ``running``, ``success`` or ``failed``.
    status: str
    outputs: list[Any] | None = None
    error_message: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    #: The progress the model last reported (``{"step", "total", "message"}``), if any.
    progress: dict[str, Any] | None = None
    #: What the model printed or logged while running it (the last bytes), if anything.
    logs: str | None = None
    #: From ``stream()``: the partial outputs this update brought, as ``(input index,
    #: output)`` pairs (a streaming model's yield); empty otherwise.
    new_outputs: list[tuple[int, Any]] = field(default_factory=list, compare=False)
    #: The answer as the server sent it (file outputs still as strings).
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def canceled(self) -> bool:
        return self.status == "failed" and self.error_message == CANCELED_MESSAGE

    @classmethod
    def from_body(
        cls,
        prediction_id: str,
        body: dict[str, Any],
        outputs: list[Any] | None = None,
        new_outputs: list[tuple[int, Any]] | None = None,
    ) -> Prediction:
        return cls(
            id=prediction_id,
            status=str(body.get("status", "")),
            outputs=outputs if outputs is not None else body.get("outputs"),
            error_message=body.get("error_message"),
            created_at=body.get("created_at"),
            started_at=body.get("started_at"),
            completed_at=body.get("completed_at"),
            progress=body.get("progress"),
            logs=body.get("logs"),
            new_outputs=new_outputs or [],
            raw=body,
        )
