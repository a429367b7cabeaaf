"""``Client``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from tungstenkit.client._errors import EventsUnsupported
from tungstenkit.client._operations import (
    Operation,
    Operations,
    Sleep,
    StreamState,
    check,
    no_events_message,
    prediction_id_of,
)
from tungstenkit.client._prediction import Prediction
from tungstenkit.client._retry import RetryPolicy
from tungstenkit.client._settings import base_url, request_headers, timeouts
from tungstenkit.client._sse import EventParser

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


class Client:
    """A client of a running ``tungsten serve`` (or any server with the same API).

    ``timeout`` bounds each HTTP request (connect, send, each read); long-polls get their
    hold time on top. ``retries`` is how many times a request is sent again after a
    failure that allows it (see ``wait`` and ``submit``), waiting as ``Retry-After`` says.
    ``api_key`` (default: ``$TUNGSTEN_API_KEY``) is sent as ``Authorization: Bearer`` to a
    server with API keys on; a refused key raises ``AccessDenied``.

    >>> client = Client("http://localhost:3000")
    >>> output = client.predict({"prompt": "a cat"})
    >>> output["image"].save("cat.png")
    """

    def __init__(
        self,
        url: str = "http://localhost:3000",
        *,
        timeout: float = 30.0,
        retries: int = 5,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = base_url(url)
        self.timeout = timeout
        self._ops = Operations(RetryPolicy(retries=retries))
        self._http = httpx.Client(
            base_url=self.url, headers=request_headers(headers, api_key), timeout=timeouts(timeout)
        )

    # -- operations --------------------------------------------------------------------
    def predict(
        self,
        inputs: Any,
        *,
        timeout: float | None = None,
        priority: str | None = None,
        deadline_s: float | None = None,
    ) -> Any:
        """Run a prediction to its end and return its outputs.

        ``inputs`` is one input (a dict; returns its output) or a list of them (returns
        the list of outputs, in order). Raises ``PredictionFailed`` (``PredictionCanceled``)
        if it failed, ``InvalidInput`` if the server refused the inputs, ``WaitTimeout``
        if it had not ended after ``timeout`` seconds (None: wait as long as it takes).
        ``priority`` and ``deadline_s`` as for ``submit``.
        """
        return self._run(self._ops.predict(inputs, timeout, priority, deadline_s))

    def submit(self, inputs: Any, *, priority: str | None = None, deadline_s: float | None = None) -> str:
        """Queue a prediction and return its id at once.

        ``priority`` (``high``, ``normal``, ``low``) orders it in a backlog; with
        ``deadline_s``, a prediction no worker started within that many seconds fails
        with ``Deadline exceeded`` (the server's default: neither).

        The request carries an ``Idempotency-Key``. It is retried only where it surely did not
        queue anything (no connection made, 429, 503), since a server that does not honour
        the key would run a resent prediction twice.
        """
        return self._run(self._ops.submit(inputs, priority, deadline_s))

    def get(self, prediction: str | Prediction) -> Prediction:
        """The prediction as it stands (``PredictionNotFound`` if unknown or expired)."""
        return self._run(self._ops.get(prediction))

    def wait(self, prediction: str | Prediction, *, timeout: float | None = None) -> Prediction:
        """Long-poll until the prediction ends (success or failure) and return it."""
        return self._run(self._ops.wait(prediction, timeout))

    def cancel(self, prediction: str | Prediction) -> Prediction:
        """Cancel the prediction (nothing changes if it has ended) and return it."""
        return self._run(self._ops.cancel(prediction))

    def stream(self, prediction: str | Prediction) -> Iterator[Prediction]:
        """The prediction at each change, from the server's event stream, until it ends:
        each update has its ``status``, ``progress`` and ``logs`` so far, and the partial
        outputs it brought (``new_outputs``, from a streaming model); the last one is the
        ended prediction. A dropped connection is resumed where it stopped
        (``Last-Event-ID``), up to ``retries`` times.

        Raises ``EventsUnsupported`` on a server without ``GET /predictions/{id}/events``
        (use ``wait``, which long-polls, there).
        """
        state = StreamState(prediction_id_of(prediction), self._ops.policy)
        url = state.url
        while True:
            try:
                with self._http.stream(
                    "GET", url, headers=state.headers(), timeout=timeouts(self.timeout, read=None)
                ) as response:
                    if response.status_code in (404, 406):
                        self.get(state.prediction_id)  # PredictionNotFound when it is the prediction that is unknown
                        raise EventsUnsupported(no_events_message(url, response.status_code))
                    if response.status_code == 204:
                        return  # nothing after the last event received
                    if response.status_code != 200:
                        response.read()
                        check(response, state.prediction_id)
                    parser = EventParser()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        update = self._run(self._ops.stream_update(state, event))
                        if update is not None:
                            state.heard()
                            yield update
                            if update.ended:
                                return
            except httpx.TransportError as exc:
                time.sleep(state.dropped(exc))
                continue
            if state.ended:
                return
            time.sleep(state.dropped())  # the stream ended before the prediction did: resume

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``status`` is ``ok`` when a worker is ready (the body is returned either way)."""
        return self._run(self._ops.health())

    def schema(self) -> dict[str, Any]:
        """``GET /``: the model's name, ``input_schema``, ``output_schema`` and ``batch_size``."""
        return self._run(self._ops.schema())

    # -- plumbing ----------------------------------------------------------------------
    def _run(self, operation: Operation[T]) -> T:
        result: Any = None
        error: httpx.TransportError | None = None
        while True:
            try:
                action = operation.send(result) if error is None else operation.throw(error)
            except StopIteration as stop:
                return stop.value
            result, error = None, None
            if isinstance(action, Sleep):
                time.sleep(action.seconds)
                continue
            try:
                result = self._http.request(
                    action.method,
                    action.url,
                    params=action.params,
                    json=action.json,
                    headers=action.headers,
                    timeout=timeouts(self.timeout, hold=action.hold_s),
                )
            except httpx.TransportError as exc:
                error = exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"
