"""Streaming models, progress, logs and server-sent events, against real processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import MODELS, Server, ServerFactory
from tungstenkit.client._sse import Event, EventParser

STREAMING = MODELS / "streaming"


def events(server: Server, path: str, headers: dict[str, str] | None = None, limit: int | None = None,
           method: str = "GET", **kwargs: Any) -> Iterator[tuple[float, Event]]:
    """The events of a stream as they arrive, with when each did (up to ``limit`` of them)."""
    parser = EventParser()
    count = 0
    with server.client.stream(method, path, headers={"Accept": "text/event-stream", **(headers or {})},
                              timeout=60, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            event = parser.feed(line)
            if event is not None:
                yield time.monotonic(), event
                count += 1
                if limit is not None and count >= limit:
                    return


@pytest.fixture(scope="module")
def streaming(module_serve: ServerFactory) -> Server:
    return module_serve(STREAMING)


def submit(server: Server, inputs: list[dict[str, Any]]) -> str:
    response = server.client.post("/predictions", json=inputs)
    assert response.status_code == 200, response.text
    return response.json()["prediction_id"]  # type: ignore[no-any-return]


def test_a_streaming_model_sends_its_events_in_order_while_it_runs(streaming: Server) -> None:
    prediction_id = submit(streaming, [{"prompt": "a", "steps": 4, "delay": 0.3}])
    seen = list(events(streaming, f"/predictions/{prediction_id}/events"))
    kinds = [e.event for _, e in seen]
    assert kinds[:2] == ["queued", "start"] and kinds[-1] == "completed"
    outputs = [json.loads(e.data) for _, e in seen if e.event == "output"]
    assert outputs == [[{"index": 0, "output": {"text": f"a:{step}"}}] for step in range(4)]
    progress = [json.loads(e.data) for _, e in seen if e.event == "progress"]
    assert progress[-1] == {"step": 4, "total": 4, "message": "step 4"}
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    logs = "".join(json.loads(e.data)["text"] for _, e in seen if e.event == "log")
    assert "step 0\n" in logs and "logged step 3" in logs
    first_output = next(t for t, e in seen if e.event == "output")
    completed_at = seen[-1][0]
    assert completed_at - first_output > 0.6  # the first output came while it ran, not with its end
    final = json.loads(seen[-1][1].data)
    assert final["status"] == "success" and final["outputs"] == [{"text": "a:0 a:1 a:2 a:3"}]
    assert final["progress"] == {"step": 4, "total": 4, "message": "step 4"}
    assert "logged step 3" in final["logs"]
    ids = [e.id for _, e in seen]
    assert len(set(ids)) == len(ids)
    # ?wait= and polling see the same final body.
    assert streaming.result(prediction_id) == final
    assert streaming.client.get(f"/predictions/{prediction_id}").json() == final
