"""The client's errors: one base class, one subclass per thing a caller may handle.

::

    ClientError
    ├── TransportError          the server could not be reached (after the retries)
    ├── APIError                the server answered with an error status
    │   ├── InvalidInput        422: ``.errors`` holds the pydantic-style ``detail`` entries
    │   ├── PredictionNotFound  404 for a prediction: unknown, or its result expired
    │   └── ServerBusy          429 or 503 still, after the retries
    ├── PredictionFailed        the prediction ended ``failed``: ``.error_message``
    │   └── PredictionCanceled  ... because it was canceled
    ├── WaitTimeout             the prediction had not ended within the time given
    └── EventsUnsupported       the server has no event stream (``stream()``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tungstenkit._errors import TungstenError

if TYPE_CHECKING:
    from tungstenkit.client._prediction import Prediction


class ClientError(TungstenError):
    """Base class of the errors ``Client`` and ``AsyncClient`` raise."""


class TransportError(ClientError):
    """The request did not get an answer: connection refused or reset, timeout."""


class APIError(ClientError):
    """The server answered with an error status; ``detail`` is its ``{"detail": ...}``."""

    def __init__(self, message: str, status_code: int, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class AccessDenied(APIError):
    """401 (no API key, or one unknown, revoked or mistyped) or 403 (its scope is too small)."""


class InvalidInput(APIError):
    """422: the server refused the inputs. ``errors`` lists ``{"loc", "msg", "type"}``;
    ``loc`` is ``["body", INDEX, FIELD, ...]`` for a field of the INDEX-th input."""

    def __init__(self, message: str, detail: Any) -> None:
        super().__init__(message, 422, detail)
        self.errors: list[dict[str, Any]] = (
            [e for e in detail if isinstance(e, dict)] if isinstance(detail, list) else []
        )

    def by_input(self) -> dict[int | None, list[dict[str, Any]]]:
        """The errors grouped by the index of the input they concern (None: the whole request)."""
        groups: dict[int | None, list[dict[str, Any]]] = {}
        for error in self.errors:
            loc = error.get("loc") or []
            index = loc[1] if len(loc) > 1 and loc[0] == "body" and isinstance(loc[1], int) else None
            groups.setdefault(index, []).append(error)
        return groups


class PredictionNotFound(APIError):
    """404: no prediction with this id (never created, or its result expired)."""

    def __init__(self, prediction_id: str) -> None:
        super().__init__(f"Prediction {prediction_id} not found (unknown, or its result expired)", 404)
        self.prediction_id = prediction_id


class ServerBusy(APIError):
    """429 (queue full) or 503 (unavailable, draining), still after the retries."""

    def __init__(self, message: str, status_code: int, detail: Any = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status_code, detail)
        self.retry_after_s = retry_after_s


class PredictionFailed(ClientError):
    """The prediction ended with status ``failed``; ``error_message`` says why."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        self.prediction_id = prediction.id
        self.error_message = prediction.error_message or "failed"
        super().__init__(f"Prediction {prediction.id} failed: {self.error_message}")


class PredictionCanceled(PredictionFailed):
    """The prediction was canceled before it ended."""


class WaitTimeout(ClientError):
    """The prediction had not ended when the wait's time was up (it goes on: wait again, or cancel)."""

    def __init__(self, prediction: Prediction, timeout_s: float) -> None:
        super().__init__(f"Prediction {prediction.id} is still {prediction.status} after {timeout_s:g}s")
        self.prediction = prediction
        self.prediction_id = prediction.id


class EventsUnsupported(ClientError):
    """The server has no event stream for predictions; use ``wait()`` (long-poll) instead."""


__all__ = [
    "APIError",
    "ClientError",
    "EventsUnsupported",
    "InvalidInput",
    "PredictionCanceled",
    "PredictionFailed",
    "PredictionNotFound",
    "ServerBusy",
    "TransportError",
    "WaitTimeout",
]
