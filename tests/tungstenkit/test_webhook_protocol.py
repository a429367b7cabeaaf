"""What a client may ask for as a webhook, how deliveries are signed, and how they are POSTed."""

from __future__ import annotations

import json

import pytest

from tests.webhooksupport import webhook_receiver
from tungstenkit._errors import FetchError, InvalidWebhook, URLRefused
from tungstenkit._fetch import Allowlist, FetchPolicy, post
from tungstenkit._webhook_protocol import (
    WebhookRequest,
    parse_events,
    payload,
    retry_intervals,
    sign,
    verify_signature,
)

NONE = Allowlist()


def test_no_webhook_asked_for() -> None:
    assert WebhookRequest.parse(None, None, NONE) is None


def test_a_webhook_with_events() -> None:
    found = WebhookRequest.parse("https://hooks.example.com/in?x=1", "completed, start", NONE)
    assert found == WebhookRequest("https://hooks.example.com/in?x=1", ("start", "completed"))
    assert WebhookRequest.parse("http://hooks.example.com", None, NONE).events == ("completed",)


@pytest.mark.parametrize(
    ("url", "events", "field", "message"),
    [
        ("ftp://hooks.example.com/", None, "webhook", "scheme"),
        ("http://127.0.0.1:8000/hook", None, "webhook", "Loopback"),
        ("http://169.254.169.254/latest", None, "webhook", "Link Local"),
        ("http://[::ffff:10.0.0.1]/", None, "webhook", "Private-Use"),
        ("not a url", None, "webhook", "refused"),
        ("https://hooks.example.com/" + "a" * 3000, None, "webhook", "longer than"),
        ("https://hooks.example.com/", "finished", "webhook_events", "unknown event 'finished'"),
        ("https://hooks.example.com/", " , ", "webhook_events", "no event"),
        (None, "start", "webhook_events", "needs a webhook URL"),
    ],
)
def test_unusable_webhooks_are_refused_up_front(url: str | None, events: str | None, field: str, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message) as caught:
        WebhookRequest.parse(url, events, NONE)
    assert caught.value.field == field


def test_the_allowlist_lets_a_private_receiver_in_on_the_ports_it_names() -> None:
    assert WebhookRequest.parse("http://127.0.0.1:9/hook", None, Allowlist.parse("127.0.0.1:9")) is not None
    assert WebhookRequest.parse("http://127.0.0.1/hook", None, Allowlist.parse("127.0.0.1")) is not None
    with pytest.raises(InvalidWebhook, match=r"add 127.0.0.1:9 to TUNGSTEN_URL_ALLOWLIST"):
        WebhookRequest.parse("http://127.0.0.1:9/hook", None, Allowlist.parse("127.0.0.1"))


def test_events_come_in_the_order_they_happen() -> None:
    assert parse_events("COMPLETED start start") == ("start", "completed")


def test_the_payload_is_the_get_body_with_id_and_event() -> None:
    body = b'{"outputs":[{"y":1}],"status":"success","error_message":null}'
    assert json.loads(payload("abc", "completed", body)) == {
        "id": "abc",
        "event": "completed",
        "outputs": [{"y": 1}],
        "status": "success",
        "error_message": None,
    }


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    body = b'{"id":"abc"}'
    header = sign("s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature("s3cret", header, body, now=1_700_000_100)
    assert not verify_signature("s3cret", header, body + b" ", now=1_700_000_100)
    assert not verify_signature("other", header, body, now=1_700_000_100)
    assert not verify_signature("s3cret", header, body, now=1_700_001_000)  # too old
    assert not verify_signature("s3cret", "v1=abc", body)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"42.{}", hashlib.sha256).hexdigest()
    assert sign("k", b"{}", 42) == f"t=42,v1={expected}"


def test_retries_back_off_four_times_longer_each_time() -> None:
    assert retry_intervals(4, 2) == [2, 8, 32, 128]
    assert retry_intervals(0, 2) == []
    assert max(retry_intervals(20, 2)) == 86_400


LOOPBACK = FetchPolicy(allowlist=Allowlist.parse("127.0.0.1/32:*"), read_timeout_s=5, total_timeout_s=5)


def test_post_delivers_body_and_headers() -> None:
    with webhook_receiver() as receiver:
        status = post(receiver.url, b'{"a":1}', {"X-Test": "yes"}, LOOPBACK)
        assert status == 200
        (delivery,) = receiver.deliveries
        assert delivery.body == b'{"a":1}'
        assert delivery.headers["X-Test"] == "yes"
        assert delivery.headers["Content-Type"] == "application/json"


def test_post_reports_the_receivers_status() -> None:
    with webhook_receiver(fail_first=1) as receiver:
        assert post(receiver.url, b"{}", {}, LOOPBACK) == 500


def test_post_goes_only_where_downloads_may() -> None:
    with webhook_receiver() as receiver:
        with pytest.raises(URLRefused, match="Loopback"):
            post(receiver.url, b"{}", {}, FetchPolicy())
        assert receiver.arrived == []
    with pytest.raises(URLRefused):
        post("http://localhost:9/hook", b"{}", {}, FetchPolicy())  # a name resolving to loopback


def test_post_times_out_on_a_receiver_that_hangs() -> None:
    policy = FetchPolicy(allowlist=Allowlist.parse("127.0.0.1/32:*"), read_timeout_s=0.5, total_timeout_s=0.5)
    with webhook_receiver(hang=True) as receiver, pytest.raises(FetchError, match="no answer"):
        post(receiver.url, b"{}", {}, policy)
