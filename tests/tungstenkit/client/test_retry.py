"""Which requests are sent again, how long the client waits, and the Idempotency-Key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from tungstenkit.client import IDEMPOTENCY_HEADER, Client, ServerBusy, TransportError
from tungstenkit.client._operations import Send, Sleep, send
from tungstenkit.client._retry import Retry, RetryPolicy, retry_after_s


def _start(call: Send, policy: RetryPolicy) -> Any:
    operation = send(call, policy)
    assert next(operation) is call
    return operation


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://x/predictions"))


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")]
)
def test_a_submit_that_never_reached_the_server_is_sent_again(failure: httpx.TransportError) -> None:
    call = Send("POST", "/predictions", headers={IDEMPOTENCY_HEADER: "k1"}, retry=Retry.SUBMIT)
    operation = _start(call, RetryPolicy(retries=3, backoff_s=0.5))
    assert operation.throw(failure) == Sleep(0.5)
    assert operation.send(None) is call  # the same request, the same key


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("closed"),
        httpx.ReadError("reset"),
        httpx.WriteError("broken pipe"),
    ],
)
def test_a_submit_that_may_have_reached_the_server_is_not_sent_again(failure: httpx.TransportError) -> None:
    operation = _start(Send("POST", "/predictions", retry=Retry.SUBMIT), RetryPolicy(retries=3))
    with pytest.raises(TransportError):
        operation.throw(failure)


def test_reads_are_sent_again_after_any_transport_failure() -> None:
    operation = _start(Send("GET", "/predictions/x"), RetryPolicy(retries=3, backoff_s=0.5))
    assert operation.throw(httpx.ReadTimeout("no answer")) == Sleep(0.5)
    operation.send(None)
    assert operation.throw(httpx.RemoteProtocolError("closed")) == Sleep(1.0)


@pytest.mark.parametrize(
    ("status", "retry", "again"),
    [
        (429, Retry.SUBMIT, True),
        (503, Retry.SUBMIT, True),
        (502, Retry.SUBMIT, False),
        (500, Retry.SUBMIT, False),
        (504, Retry.SUBMIT, False),
        (429, Retry.IDEMPOTENT, True),
        (502, Retry.IDEMPOTENT, True),
        (503, Retry.TRANSPORT, False),
        (422, Retry.IDEMPOTENT, False),
    ],
)
def test_statuses_that_are_retried(status: int, retry: Retry, again: bool) -> None:
    operation = _start(Send("POST", "/predictions", retry=retry), RetryPolicy(retries=3, backoff_s=0.25))
    response = _response(status, {"Retry-After": "2"})
    if again:
        assert operation.send(response) == Sleep(2.0)  # Retry-After wins over the backoff
    else:
        with pytest.raises(StopIteration) as stop:
            operation.send(response)
        assert stop.value.value is response


def test_retries_stop_after_the_budget() -> None:
    operation = _start(Send("GET", "/"), RetryPolicy(retries=2, backoff_s=0.1))
    assert operation.send(_response(503)) == Sleep(0.1)
    operation.send(None)
    assert operation.send(_response(503)) == Sleep(0.2)
    operation.send(None)
    with pytest.raises(StopIteration) as stop:
        operation.send(_response(503))
    assert stop.value.value.status_code == 503


def test_retry_after_as_seconds_or_a_date() -> None:
    assert retry_after_s(_response(429, {"Retry-After": "3"})) == 3.0
    assert 8 < retry_after_s(_response(429, {"Retry-After": formatdate(time.time() + 10, usegmt=True)})) <= 10  # type: ignore[operator]
    assert retry_after_s(_response(429, {"Retry-After": "soon"})) is None
    assert retry_after_s(_response(429)) is None
    assert RetryPolicy(max_delay_s=5).delay(1, 3600) == 5


class _Refusing(BaseHTTPRequestHandler):
    """Answers 429 with Retry-After to the first ``refusals`` POSTs, then accepts."""

    refusals = 2
    seen: ClassVar[list[tuple[float, str | None]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((time.monotonic(), self.headers.get(IDEMPOTENCY_HEADER)))
        refused = len(self.seen) <= self.refusals
        body = json.dumps({"detail": "full"} if refused else {"prediction_id": "a" * 32}).encode()
        self.send_response(429 if refused else 200)
        if refused:
            self.send_header("Retry-After", "0.3")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    _Refusing.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_refused_submit_is_resent_with_the_same_key_after_retry_after(refusing_server: str) -> None:
    with Client(refusing_server, retries=5) as client:
        assert client.submit({"x": 1}) == "a" * 32
        first_key = _Refusing.seen[0][1]
        assert first_key and [key for _, key in _Refusing.seen] == [first_key] * 3
        assert all(later - earlier >= 0.29 for (earlier, _), (later, _) in zip(_Refusing.seen, _Refusing.seen[1:]))
        _Refusing.seen = []
        client.submit({"x": 2})
        assert _Refusing.seen[-1][1] != first_key  # a new submit, a new key
    _Refusing.seen = []
    with Client(refusing_server, retries=1) as client, pytest.raises(ServerBusy) as caught:
        client.submit({"x": 3})
    assert caught.value.status_code == 429 and caught.value.retry_after_s == pytest.approx(0.3)
