"""Streaming models, progress, logs and server-sent events, against real processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import MODELS, Server, ServerFactory
from tungstenkit.client._sse import Event, EventParser

STREAMING = MODELS / "streaming"


def events(
    server: Server,
    path: str,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    method: str = "GET",
    **kwargs: Any,
) -> Iterator[tuple[float, Event]]:
    """The events of a stream as they arrive, with when each did (up to ``limit`` of them)."""
    parser = EventParser()
    count = 0
    with server.client.stream(
        method, path, headers={"Accept": "text/event-stream", **(headers or {})}, timeout=60, **kwargs
    ) as response:
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


def test_get_shows_progress_and_logs_while_it_runs_and_after(streaming: Server) -> None:
    prediction_id = submit(streaming, [{"prompt": "b", "steps": 30, "delay": 0.1}])

    def running_with_progress() -> dict[str, Any] | None:
        body = streaming.client.get(f"/predictions/{prediction_id}").json()
        return body if body["status"] == "running" and body["progress"] and body["logs"] else None

    from tests.support import wait_for

    body = wait_for(running_with_progress, 20, what="progress while running")
    assert body["progress"]["total"] == 30 and "step 0\n" in body["logs"]
    final = streaming.result(prediction_id)
    assert final["progress"]["step"] == 30 and "step 29\n" in final["logs"]


def test_a_plain_model_has_null_progress_and_logs(module_serve: ServerFactory) -> None:
    server = module_serve(MODELS / "scalars")
    final = server.predict([{"prompt": "x"}])
    assert final["status"] == "success" and final["progress"] is None and final["logs"] is None
    prediction_id = submit(server, [{"prompt": "x"}])
    kinds = [e.event for _, e in events(server, f"/predictions/{prediction_id}", params={"x": "1"})]
    assert kinds[0] == "queued" and kinds[-1] == "completed" and "output" not in kinds


def test_logs_are_bounded_with_a_marker(module_serve: ServerFactory) -> None:
    server = module_serve(STREAMING, env={"TUNGSTEN_MAX_LOG_BYTES": "2048"})
    final = server.predict([{"prompt": "c", "steps": 5, "chatter": 1500}])
    assert final["status"] == "success"
    assert final["logs"].startswith("[earlier logs dropped]\n") and len(final["logs"].encode()) <= 2048
    assert final["logs"].endswith("logged step 4\n")


def test_a_client_that_reconnects_to_another_api_process_gets_exactly_the_missed_events(
    serve: ServerFactory,
) -> None:
    first = serve(STREAMING, namespace="evreconnect")
    second = serve(STREAMING, namespace="evreconnect", workers=0)
    prediction_id = submit(first, [{"prompt": "r", "steps": 12, "delay": 0.1}])
    k = 5
    head = [e for _, e in events(first, f"/predictions/{prediction_id}/events", limit=k)]
    tail = [
        e for _, e in events(second, f"/predictions/{prediction_id}/events", headers={"Last-Event-ID": head[-1].id})
    ]
    whole = [e for _, e in events(second, f"/predictions/{prediction_id}/events")]
    assert head + tail == whole
    assert whole[-1].event == "completed"
    outputs = [json.loads(e.data)[0]["output"]["text"] for e in whole if e.event == "output"]
    assert outputs == [f"r:{s}" for s in range(12)]
    # After completed there is nothing more: 204 tells an EventSource to stop reconnecting.
    again = second.client.get(f"/predictions/{prediction_id}/events", headers={"Last-Event-ID": whole[-1].id})
    assert again.status_code == 204


def test_post_with_stream_answers_with_the_events(streaming: Server) -> None:
    seen = [
        e
        for _, e in events(
            streaming, "/predictions", method="POST", params={"stream": "true"}, json=[{"prompt": "p", "steps": 2}]
        )
    ]
    assert seen[0].event == "queued" and seen[-1].event == "completed"
    prediction_id = json.loads(seen[0].data)["id"]
    assert streaming.result(prediction_id) == json.loads(seen[-1].data)


def test_event_stream_errors(streaming: Server) -> None:
    missing = streaming.client.get("/predictions/" + "f" * 32 + "/events")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    prediction_id = submit(streaming, [{"prompt": "e"}])
    bad = streaming.client.get(f"/predictions/{prediction_id}/events", headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
    flag = streaming.client.post("/predictions", params={"stream": "maybe"}, json=[{"prompt": "e"}])
    assert flag.status_code == 422 and flag.json()["detail"][0]["loc"] == ["query", "stream"]


def test_cancel_interrupts_a_streaming_model_between_yields(streaming: Server) -> None:
    prediction_id = submit(streaming, [{"prompt": "k", "steps": 200, "delay": 0.05}])
    stream = events(streaming, f"/predictions/{prediction_id}/events")
    for _, event in stream:
        if event.event == "output":
            break
    assert streaming.client.post(f"/predictions/{prediction_id}/cancel").status_code == 200
    rest = [e for _, e in stream]
    assert rest[-1].event == "completed"
    final = json.loads(rest[-1].data)
    assert final["status"] == "failed" and final["error_message"] == "Canceled"
    # The worker is free again soon: a new prediction completes.
    assert streaming.predict([{"prompt": "after"}], wait=5)["status"] == "success"


def test_a_generator_that_raises_fails_its_prediction_with_the_reason(streaming: Server) -> None:
    final = streaming.predict([{"prompt": "f", "steps": 3, "fail_at": 1}])
    assert final["status"] == "failed" and final["error_message"] == "RuntimeError: failed at step 1"
    assert "logged step 0" in final["logs"]


def test_output_and_logs_webhooks_are_throttled_and_followed_by_completed(module_serve: ServerFactory) -> None:
    from tests.webhooksupport import webhook_receiver

    env = {"TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*", "TUNGSTEN_WEBHOOK_SECRET": "s"}
    server = module_serve(STREAMING, env=env)
    with webhook_receiver() as receiver:
        response = server.client.post(
            "/predictions",
            params={"webhook": receiver.url, "webhook_events": "output,logs,completed"},
            json=[{"prompt": "w", "steps": 20, "delay": 0.1}],
        )
        assert response.status_code == 200, response.text
        prediction_id = response.json()["prediction_id"]
        final = server.result(prediction_id)
        from tests.support import wait_for

        wait_for(lambda: any(d.json["event"] == "completed" for d in receiver.deliveries), 30, what="completed")
        deliveries = list(receiver.deliveries)
    by_event: dict[str, list[Any]] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery.json["event"], []).append(delivery)
    completed = by_event["completed"]
    assert len(completed) == 1 and {k: v for k, v in completed[0].json.items() if k not in ("id", "event")} == final
    outputs = by_event.get("output", [])
    # About 2 s of outputs at most every 500 ms: a few webhooks, not one per yield.
    assert 1 <= len(outputs) <= 6, [d.json for d in outputs]
    sent = [o[0]["output"]["text"] for d in outputs for o in d.json["output_events"]]
    assert sent == [f"w:{s}" for s in range(len(sent))]  # in order, none twice, none skipped
    assert all(d.json["status"] == "running" for d in outputs)
    logs = by_event.get("logs", [])
    assert 1 <= len(logs) <= 6 and "step 0" in logs[0].json["logs"]
    assert deliveries.index(completed[0]) == len(deliveries) - 1


def test_the_python_client_streams_outputs_progress_and_logs_and_resumes_a_dropped_stream(
    streaming: Server,
) -> None:
    from tests.redisproxy import freezing_proxy
    from tungstenkit import Client

    with freezing_proxy(streaming.port) as proxy, Client(f"http://127.0.0.1:{proxy.port}", timeout=30) as client:
        prediction_id = client.submit({"prompt": "z", "steps": 10, "delay": 0.1})
        updates = []
        for update in client.stream(prediction_id):
            updates.append(update)
            if len(updates) == 6:
                proxy.cut()  # the connection drops: the client resumes after the last event
    tokens = [output["text"] for u in updates for _, output in u.new_outputs]
    assert tokens == [f"z:{s}" for s in range(10)]  # each exactly once, in order
    final = updates[-1]
    assert final.succeeded and final.outputs == [{"text": " ".join(f"z:{s}" for s in range(10))}]
    assert final.progress == {"step": 10, "total": 10, "message": "step 10"} and "step 9" in (final.logs or "")
    running = [u for u in updates if u.status == "running"]
    assert running and running[-1].progress is not None and "step" in (running[-1].logs or "")


def test_a_silent_stream_gets_a_keep_alive_comment_every_15_seconds(streaming: Server) -> None:
    prediction_id = submit(streaming, [{"prompt": "q", "steps": 1, "hold": 25}])
    lines: list[tuple[float, str]] = []
    with streaming.client.stream("GET", f"/predictions/{prediction_id}/events", timeout=60) as response:
        began = time.monotonic()
        for line in response.iter_lines():
            lines.append((time.monotonic() - began, line))
            if line == ": keep-alive":
                break
    streaming.client.post(f"/predictions/{prediction_id}/cancel")
    (at,) = [t for t, line in lines if line == ": keep-alive"]
    assert 14 <= at <= 20, lines
    assert [line for _, line in lines if line.startswith("event:")] == ["event: queued", "event: start"]


def test_a_stream_past_its_longest_ends_and_a_reconnect_misses_nothing(serve: ServerFactory) -> None:
    server = serve(STREAMING, env={"TUNGSTEN_MAX_STREAM_S": "1"})
    prediction_id = submit(server, [{"prompt": "m", "steps": 20, "delay": 0.2}])  # about 4 s
    path = f"/predictions/{prediction_id}/events"
    received: list[Event] = []
    connections = 0
    while not received or received[-1].event != "completed":
        headers = {"Last-Event-ID": received[-1].id} if received else {}
        received += [e for _, e in events(server, path, headers=headers)]
        connections += 1
        assert connections < 20, received
    assert connections >= 2  # the server ended the first stream before the prediction ended
    outputs = [json.loads(e.data)[0]["output"]["text"] for e in received if e.event == "output"]
    assert outputs == [f"m:{s}" for s in range(20)]  # each once, in order, across the reconnects
    assert [e.event for e in received].count("start") == 1
