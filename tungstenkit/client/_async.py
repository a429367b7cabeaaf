"""``AsyncClient``: the asyncio client, with the same operations as ``Client``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
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


class AsyncClient:
    """The asyncio twin of ``Client``: the same methods, to ``await``.

    Many predictions may run at once from one client (``asyncio.gather``); it keeps up to
    ``max_connections`` connections open and queues requests beyond that.

    >>> async with AsyncClient("http://localhost:3000") as client:
    ...     outputs = await asyncio.gather(*(client.predict({"prompt": p}) for p in prompts))
    """

    def __init__(
        self,
        url: str = "http://localhost:3000",
        *,
        timeout: float = 30.0,
        retries: int = 5,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        api_key: str | None = None,
    ) -> None:
        self.url = base_url(url)
        self.timeout = timeout
        self._ops = Operations(RetryPolicy(retries=retries))
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=request_headers(headers, api_key),
            timeout=timeouts(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def predict(
        self,
        inputs: Any,
        *,
        timeout: float | None = None,
        priority: str | None = None,
        deadline_s: float | None = None,
    ) -> Any:
        """See ``Client.predict``."""
        return await self._run(self._ops.predict(inputs, timeout, priority, deadline_s))

    async def submit(self, inputs: Any, *, priority: str | None = None, deadline_s: float | None = None) -> str:
        """See ``Client.submit``."""
        return await self._run(self._ops.submit(inputs, priority, deadline_s))

    async def get(self, prediction: str | Prediction) -> Prediction:
        """See ``Client.get``."""
        return await self._run(self._ops.get(prediction))

    async def wait(self, prediction: str | Prediction, *, timeout: float | None = None) -> Prediction:
        """See ``Client.wait``."""
        return await self._run(self._ops.wait(prediction, timeout))

    async def cancel(self, prediction: str | Prediction) -> Prediction:
        """See ``Client.cancel``."""
        return await self._run(self._ops.cancel(prediction))

    async def stream(self, prediction: str | Prediction) -> AsyncIterator[Prediction]:
        """See ``Client.stream``: ``async for update in client.stream(prediction_id)``."""
        state = StreamState(prediction_id_of(prediction), self._ops.policy)
        url = state.url
        while True:
            try:
                async with self._http.stream(
                    "GET", url, headers=state.headers(), timeout=timeouts(self.timeout, read=None)
                ) as response:
                    if response.status_code in (404, 406):
                        await self.get(state.prediction_id)
                        raise EventsUnsupported(no_events_message(url, response.status_code))
                    if response.status_code == 204:
                        return
                    if response.status_code != 200:
                        await response.aread()
                        check(response, state.prediction_id)
                    parser = EventParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        update = await self._run(self._ops.stream_update(state, event))
                        if update is not None:
                            state.heard()
                            yield update
                            if update.ended:
                                return
            except httpx.TransportError as exc:
                await asyncio.sleep(state.dropped(exc))
                continue
            if state.ended:
                return
            await asyncio.sleep(state.dropped())  # the stream ended before the prediction did: resume

    async def health(self) -> dict[str, Any]:
        """See ``Client.health``."""
        return await self._run(self._ops.health())

    async def schema(self) -> dict[str, Any]:
        """See ``Client.schema``."""
        return await self._run(self._ops.schema())

    async def _run(self, operation: Operation[T]) -> T:
        result: Any = None
        error: httpx.TransportError | None = None
        while True:
            try:
                action = operation.send(result) if error is None else operation.throw(error)
            except StopIteration as stop:
                return stop.value
            result, error = None, None
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                continue
            try:
                result = await self._http.request(
                    action.method,
                    action.url,
                    params=action.params,
                    json=action.json,
                    headers=action.headers,
                    timeout=timeouts(self.timeout, hold=action.hold_s),
                )
            except httpx.TransportError as exc:
                error = exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"
