"""Webhooks end to end: `tungsten serve` delivers through RQ, signed, retried, never blocking."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from tests.support import MODELS, ROOT, Server, ServerFactory, tungsten, wait_for
from tests.webhooksupport import Receiver, webhook_receiver
from tungstenkit._webhook_protocol import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature

SECRET = "test-webhook-secret"
ENV = {
    # The receivers listen on ports of their own: every port of 127.0.0.1 is allowed.
    "TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*",
    "TUNGSTEN_WEBHOOK_SECRET": SECRET,
    "TUNGSTEN_WEBHOOK_BACKOFF_S": "1",
    "TUNGSTEN_WEBHOOK_TIMEOUT_S": "60",
}


NAMESPACE = f"webhooks{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "recorder", env=ENV, namespace=NAMESPACE)


def _create(
    server: Server, receiver: Receiver, inputs: list[dict], events: str | None = None, url: str | None = None
) -> str:
    params = {"webhook": url or receiver.url, **({"webhook_events": events} if events else {})}
    response = server.client.post("/predictions", params=params, json=inputs)
    assert response.status_code == 200, response.text
    return response.json()["prediction_id"]  # type: ignore[no-any-return]


def test_a_receiver_gets_signed_start_and_completed_webhooks(server: Server) -> None:
    with webhook_receiver() as receiver:
        prediction_id = _create(server, receiver, [{"x": 3}, {"x": 4}], events="start,completed")
        wait_for(lambda: len(receiver.deliveries) == 2, 30, what="two deliveries")
        start, completed = sorted(receiver.deliveries, key=lambda d: d.json["event"] != "start")
        for delivery, event in ((start, "start"), (completed, "completed")):
            assert delivery.json["id"] == prediction_id and delivery.json["event"] == event
            assert delivery.headers[EVENT_HEADER] == event
            assert delivery.headers[DELIVERY_HEADER] == f"webhook-{prediction_id}-{event}"
            assert verify_signature(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body)
            assert not verify_signature("another secret", delivery.headers[SIGNATURE_HEADER], delivery.body)
        assert start.json["status"] == "running" and start.json["outputs"] is None
        # The completed delivery is what GET answers, plus the id and the event.
        body = server.result(prediction_id)
        assert {k: v for k, v in completed.json.items() if k not in ("id", "event")} == body
        assert [o["x"] for o in completed.json["outputs"]] == [3, 4]


def test_failed_predictions_are_delivered_too(server: Server) -> None:
    with webhook_receiver() as receiver:
        prediction_id = _create(server, receiver, [{"x": -1}])
        wait_for(lambda: receiver.deliveries, 30, what="a delivery")
        (delivery,) = receiver.deliveries
        assert delivery.json["id"] == prediction_id
        assert delivery.json["status"] == "failed" and delivery.json["error_message"].startswith("ValueError")


def test_a_receiver_that_fails_twice_gets_it_on_the_third_try(server: Server) -> None:
    with webhook_receiver(fail_first=2) as receiver:
        prediction_id = _create(server, receiver, [{"x": 1}])
        wait_for(lambda: receiver.deliveries, 60, what="the third try")
        assert len(receiver.arrived) == 3
        assert receiver.events() == [(prediction_id, "completed")]
        assert len({d.headers[DELIVERY_HEADER] for d in receiver.arrived}) == 1  # one delivery, tried three times
        # Each try is signed afresh.
        assert all(verify_signature(SECRET, d.headers[SIGNATURE_HEADER], d.body) for d in receiver.arrived)
    metrics = server.client.get("/metrics").text
    assert 'tungsten_webhook_deliveries_total{outcome="retried"}' in metrics
    log = server.log()
    assert "will be retried" in log and "WebhookFailed" not in log  # one line per failed try, no traceback


def test_webhook_urls_reach_the_log_escaped_and_without_their_query(server: Server) -> None:
    token = f"secret-{uuid.uuid4().hex}"
    with webhook_receiver(fail_first=1) as receiver:
        # The client sends %1b, %0b and %c2%85 in its query string: the URL holds the characters.
        url = f"http://127.0.0.1:{receiver.port}/hook\x1bA\x0bB\u0085C\u2028D?token={token}"
        prediction_id = _create(server, receiver, [{"x": 1}], url=url)
        wait_for(lambda: receiver.deliveries, 60, what="the second try")
        assert receiver.events() == [(prediction_id, "completed")]
        # Sent as a browser would: percent-encoded.
        assert receiver.deliveries[0].path == f"/hook%1BA%0BB%C2%85C%E2%80%A8D?token={token}"
    log = server.log()
    shown = f"http://127.0.0.1:{receiver.port}/hook\\x1bA\\x0bB\\x85C\\u2028D?..."
    assert f"Webhook 'completed' of prediction {prediction_id} to {shown} failed: the receiver answered 500" in log
    assert token not in log
    assert not {"\x1b", "\x0b", "\x85", "\u2028"} & set(log)


def test_a_receiver_that_hangs_delays_nothing_else(server: Server) -> None:
    with webhook_receiver(hang=True) as hanging, webhook_receiver() as healthy:
        stuck = _create(server, hanging, [{"x": 1}])
        wait_for(lambda: hanging.arrived, 30, what="the hanging receiver to be called")
        # While one delivery hangs: predictions run, and other receivers get theirs.
        started = time.monotonic()
        fine = _create(server, healthy, [{"x": 2}])
        assert server.result(fine)["status"] == "success"
        assert server.predict([{"x": 5}])["status"] == "success"
        wait_for(lambda: healthy.deliveries, 30, what="the healthy receiver's delivery")
        assert healthy.events() == [(fine, "completed")]
        assert not hanging.deliveries and not hanging.release.is_set()  # still hanging all along
        assert time.monotonic() - started < 60  # i.e. before the hanging delivery's timeout
        assert server.result(stuck)["status"] == "success"
        hanging.release.set()
        wait_for(lambda: hanging.deliveries, 30, what="the released delivery")


def test_ten_deliveries_hanging_at_one_receiver_delay_no_other(server: Server) -> None:
    with webhook_receiver(hang=True) as hanging, webhook_receiver() as healthy:
        for n in range(10):
            _create(server, hanging, [{"x": n}])
        wait_for(lambda: len(hanging.arrived) >= 4, 30, what="the hanging receiver to hold four deliveries")
        fine = _create(server, healthy, [{"x": 11}])
        wait_for(lambda: healthy.deliveries, 15, what="the healthy receiver's delivery")  # the timeout is 60 s
        assert healthy.events() == [(fine, "completed")]
        # Two at once per receiver in each of the two webhook processes; the others wait
        # their turn without holding a delivery thread.
        assert len(hanging.arrived) == 4 and not hanging.deliveries
        hanging.release.set()
        wait_for(lambda: len(hanging.deliveries) == 10, 60, what="every delivery to the released receiver")


def test_unusable_webhooks_are_refused_with_422(server: Server) -> None:
    cases = [
        ({"webhook": "http://10.0.0.1/hook"}, "webhook", "10.0.0.1 is not a public address (10.0.0.0/8: Private-Use"),
        ({"webhook": "file:///etc/passwd"}, "webhook", "scheme"),
        ({"webhook": "https://hooks.example.com/", "webhook_events": "done"}, "webhook_events", "unknown event"),
        ({"webhook_events": "start"}, "webhook_events", "needs a webhook URL"),
    ]
    for params, field, message in cases:
        for path in ("/predictions", "/predict"):
            response = server.client.post(path, params=params, json=[{"x": 1}])
            assert response.status_code == 422, response.text
            (detail,) = response.json()["detail"]
            assert detail["loc"] == ["query", field] and message in detail["msg"]


def test_rq_info_shows_the_webhook_queue(server: Server, redis_url: str) -> None:
    with webhook_receiver() as receiver:
        _create(server, receiver, [{"x": 1}])
        wait_for(lambda: receiver.deliveries, 30, what="a delivery")
    info = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--url", redis_url, "--serializer", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    queues = [line.split("|")[0].strip() for line in info.stdout.splitlines() if "|" in line]
    assert f"tungsten-webhooks-{NAMESPACE}" in queues, info.stdout


def test_without_a_configured_secret_one_is_generated_and_status_prints_it(
    serve: ServerFactory, redis_url: str
) -> None:
    namespace = f"hooks{uuid.uuid4().hex[:8]}"
    server = serve(MODELS / "recorder", env={"TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*"}, namespace=namespace)
    with webhook_receiver() as receiver:
        _create(server, receiver, [{"x": 1}])
        wait_for(lambda: receiver.deliveries, 30, what="a delivery")
    printed = tungsten("status", "--redis-url", redis_url, "--namespace", namespace, "--webhook-secret")
    assert printed.returncode == 0, printed.stderr
    secret = printed.stdout.strip()
    assert len(secret) == 64
    (delivery,) = receiver.deliveries
    assert verify_signature(secret, delivery.headers[SIGNATURE_HEADER], delivery.body)
