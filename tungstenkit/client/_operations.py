"""What the clients do, written once.

Each operation is a generator that yields the requests (``Send``) and pauses (``Sleep``)
it needs and gets the responses back: ``Client`` drives it with blocking calls,
``AsyncClient`` with ``await``. Retries, long-polling and decoding live here only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tungstenkit.client._errors import (
    AccessDenied,
    APIError,
    ClientError,
    InvalidInput,
    PredictionCanceled,
    PredictionFailed,
    PredictionNotFound,
    ServerBusy,
    TransportError,
    WaitTimeout,
)
from tungstenkit.client._payload import SchemaWalker, decode_outputs, encode_inputs, file_links
from tungstenkit.client._prediction import Prediction
from tungstenkit.client._retry import IDEMPOTENCY_HEADER, Retry, RetryPolicy, retry_after_s
from tungstenkit.client._sse import Event

T = TypeVar("T")

#: The longest hold asked of ``?wait=`` in one request (the server caps it too: 60 s by default).
MAX_HOLD_S = 60.0


@dataclass(frozen=True)
class Send:
    """One HTTP request: the driver sends it and gives back the ``httpx.Response``."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server may hold the answer (long-poll), added to the read timeout.
    hold_s: float = 0.0
    retry: Retry = Retry.IDEMPOTENT


@dataclass(frozen=True)
class Sleep:
    seconds: float


Action = Send | Sleep
Operation = Generator[Action, Any, T]


def prediction_id_of(prediction: str | Prediction) -> str:
    return prediction.id if isinstance(prediction, Prediction) else str(prediction)


def events_path(prediction_id: str) -> str:
    return f"/predictions/{prediction_id}/events"


def no_events_message(url: str, status_code: int) -> str:
    return (
        f"This server has no event stream (GET {url} answered {status_code}); use wait() or predict(), which long-poll"
    )


def describe_transport_error(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _error_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict):
                loc = [str(p) for p in (error.get("loc") or [])]
                if loc and loc[0] == "body" and len(loc) > 1 and loc[1].isdigit():
                    where = f"input {loc[1]}" + (f", field {'.'.join(loc[2:])!r}" if len(loc) > 2 else "")
                else:
                    where = ".".join(loc)
                parts.append(f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", "")))
            else:
                parts.append(str(error))
        return "; ".join(parts)
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])
    return json.dumps(detail) if detail is not None else ""


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def check(response: httpx.Response, prediction_id: str | None = None) -> Any:
    """The JSON of a successful answer; the matching ``ClientError`` otherwise."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            return response.json()
        except ValueError:
            raise APIError(f"{response.request.url} answered {status} with a body that is not JSON", status) from None
    detail = _detail(response)
    if status == 404 and prediction_id is not None:
        raise PredictionNotFound(prediction_id)
    if status == 422:
        raise InvalidInput(f"Invalid input: {_error_text(detail)}", detail)
    message = f"{response.request.method} {response.request.url.path} answered {status}: {_error_text(detail)}"
    if status in (429, 503):
        raise ServerBusy(message, status, detail, retry_after_s(response))
    if status in (401, 403):
        raise AccessDenied(message, status, detail)
    raise APIError(message, status, detail)


def send(call: Send, policy: RetryPolicy) -> Operation[httpx.Response]:
    """Send ``call``, retrying as ``policy`` and ``call.retry`` allow."""
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield call
        except httpx.TransportError as exc:
            if attempt >= policy.retries or not policy.retries_failure(call.retry, exc):
                raise TransportError(f"{call.method} {call.url}: {describe_transport_error(exc)}") from exc
            attempt += 1
            yield Sleep(policy.delay(attempt, None))
            continue
        if attempt < policy.retries and policy.retries_status(call.retry, response.status_code):
            attempt += 1
            yield Sleep(policy.delay(attempt, retry_after_s(response)))
            continue
        return response


class Operations:
    """The client's operations, and what they remember (the model's schemas)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._metadata: dict[str, Any] | None = None
        self._outputs: SchemaWalker | None = None

    # -- the model ----------------------------------------------------------------------
    def schema(self) -> Operation[dict[str, Any]]:
        """``GET /``: the model's name, input and output schemas, batch size (fetched once)."""
        if self._metadata is None:
            response = yield from send(Send("GET", "/", headers={"Accept": "application/json"}), self.policy)
            metadata = check(response)
            if not isinstance(metadata, dict) or "output_schema" not in metadata:
                raise ClientError(f"{response.request.url} does not look like a Tungstenkit server (no output_schema)")
            self._metadata = metadata
        return self._metadata

    def health(self) -> Operation[dict[str, Any]]:
        response = yield from send(Send("GET", "/health", retry=Retry.TRANSPORT), self.policy)
        if response.status_code == 503:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "status" in body:
                return body  # not ready: the body says why
        return check(response)

    # -- predictions ----------------------------------------------------------------------
    def submit(self, inputs: Any, priority: str | None = None, deadline_s: float | None = None) -> Operation[str]:
        body = encode_inputs(inputs)
        # One key per submit, the same on each of its retries.
        headers = {IDEMPOTENCY_HEADER: uuid.uuid4().hex}
        params = {
            name: value for name, value in (("priority", priority), ("deadline_s", deadline_s)) if value is not None
        }
        request = Send("POST", "/predictions", params=params or None, json=body, headers=headers, retry=Retry.SUBMIT)
        response = yield from send(request, self.policy)
        answer = check(response)
        return str(answer["prediction_id"])

    def get(self, prediction: str | Prediction) -> Operation[Prediction]:
        prediction_id = prediction_id_of(prediction)
        response = yield from send(Send("GET", f"/predictions/{prediction_id}"), self.policy)
        return (yield from self.decode(prediction_id, check(response, prediction_id)))

    def wait(self, prediction: str | Prediction, timeout: float | None = None) -> Operation[Prediction]:
        """Long-poll until the prediction ends (``WaitTimeout`` after ``timeout`` seconds)."""
        prediction_id = prediction_id_of(prediction)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hold = MAX_HOLD_S if deadline is None else min(MAX_HOLD_S, max(deadline - time.monotonic(), 0.0))
            call = Send(
                "GET",
                f"/predictions/{prediction_id}",
                params={"wait": f"{hold:.3f}"} if hold > 0 else None,
                hold_s=hold,
            )
            response = yield from send(call, self.policy)
            body = check(response, prediction_id)
            if body.get("status") in ("success", "failed"):
                return (yield from self.decode(prediction_id, body))
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                raise WaitTimeout(Prediction.from_body(prediction_id, body), timeout)

    def cancel(self, prediction: str | Prediction) -> Operation[Prediction]:
        prediction_id = prediction_id_of(prediction)
        response = yield from send(Send("POST", f"/predictions/{prediction_id}/cancel"), self.policy)
        return (yield from self.decode(prediction_id, check(response, prediction_id)))

    def predict(
        self, inputs: Any, timeout: float | None = None, priority: str | None = None, deadline_s: float | None = None
    ) -> Operation[Any]:
        single = isinstance(inputs, Mapping) or hasattr(inputs, "model_dump")
        prediction_id = yield from self.submit(inputs, priority, deadline_s)
        prediction = yield from self.wait(prediction_id, timeout)
        raise_for_failure(prediction)
        assert prediction.outputs is not None
        return prediction.outputs[0] if single else prediction.outputs

    # -- decoding -------------------------------------------------------------------------
    def decode(self, prediction_id: str, body: Any) -> Operation[Prediction]:
        """A ``Prediction`` from a ``GET`` body, its file outputs as file objects."""
        if not isinstance(body, dict):
            raise ClientError(f"Unexpected answer for prediction {prediction_id}: {body!r:.200}")
        outputs = body.get("outputs")
        if body.get("status") != "success" or not isinstance(outputs, list):
            return Prediction.from_body(prediction_id, body)
        if self._outputs is None:
            metadata = yield from self.schema()
            self._outputs = SchemaWalker(metadata["output_schema"])
        downloads = {}
        for link in file_links(self._outputs, outputs):
            response = yield from send(Send("GET", link), self.policy)
            if response.status_code != 200:
                raise APIError(f"Output file {link} answered {response.status_code}", response.status_code)
            downloads[link] = (response.content, response.headers.get("content-type", ""))
        return Prediction.from_body(prediction_id, body, decode_outputs(self._outputs, outputs, downloads))

    def stream_update(self, state: StreamState, event: Event) -> Operation[Prediction | None]:
        """The prediction after one event of its stream (None for an event that changes
        nothing a client sees). ``completed`` (or, from other servers, any event whose
        data is a whole ``GET`` body) gives the prediction itself."""
        if event.id:
            state.last_id = event.id
        try:
            data = json.loads(event.data)
        except ValueError:
            return None
        body, new = state.body, None
        if event.event == "completed" or (isinstance(data, dict) and "status" in data and event.event != "queued"):
            prediction = yield from self.decode(state.prediction_id, data)
            state.ended = prediction.ended
            return prediction
        if event.event == "queued" and isinstance(data, dict):
            body.update(status="pending", created_at=data.get("created_at"))
        elif event.event == "start" and isinstance(data, dict):
            body.update(status="running", started_at=data.get("started_at"))
        elif event.event == "progress" and isinstance(data, dict):
            body.update(status="running", progress=data)
        elif event.event == "log" and isinstance(data, dict):
            body.update(status="running", logs=(body.get("logs") or "") + str(data.get("text", "")))
        elif event.event == "output" and isinstance(data, list):
            if self._outputs is None:
                metadata = yield from self.schema()
                self._outputs = SchemaWalker(metadata["output_schema"])
            pairs = [item for item in data if isinstance(item, dict) and "index" in item]
            decoded = decode_outputs(self._outputs, [item.get("output") for item in pairs], {})
            new = [(int(item["index"]), output) for item, output in zip(pairs, decoded)]
            body["status"] = "running"
        else:
            return None
        return Prediction.from_body(state.prediction_id, dict(body), new_outputs=new)


class StreamState:
    """What ``stream()`` knows of a prediction so far: its body as the events built it,
    the id of the last event (to resume after a dropped connection), whether it ended."""

    def __init__(self, prediction_id: str, policy: RetryPolicy) -> None:
        self.prediction_id = prediction_id
        self.url = events_path(prediction_id)
        self.body: dict[str, Any] = {"status": "pending"}
        self.last_id = ""
        self.ended = False
        self._policy = policy
        self._failures = 0

    def heard(self) -> None:
        """An update arrived: the connection works."""
        self._failures = 0

    def dropped(self, exc: httpx.TransportError | None = None) -> float:
        """The stream broke (``exc``) or ended before the prediction did (a stopping API
        process): the seconds to wait before resuming it, or ``TransportError`` when the
        retries are spent (or nothing was received yet, so there is nothing to resume)."""
        self._failures += 1
        if self._failures > self._policy.retries or (exc is not None and not self.last_id):
            reason = (
                describe_transport_error(exc) if exc is not None else "the event stream ended before the prediction did"
            )
            raise TransportError(f"GET {self.url}: {reason}") from exc
        return self._policy.delay(self._failures, None)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers


def raise_for_failure(prediction: Prediction) -> None:
    if prediction.canceled:
        raise PredictionCanceled(prediction)
    if prediction.status == "failed":
        raise PredictionFailed(prediction)
