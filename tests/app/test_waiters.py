"""What an API process remembers from the done channel."""

from __future__ import annotations

from typing import Any

from tungstenkit.app.waiters import CompletionWaiter


def _waiter(ttl: float = 60) -> CompletionWaiter:
    client: Any = None  # never used: the tests feed announcements directly
    return CompletionWaiter(client, "done", ttl)


def test_an_announcement_before_the_submit_reply_is_not_lost() -> None:
    waiter = _waiter()
    waiter._heard(b'p1 {"status":"success"}')  # the worker was faster than the submit's reply
    waiter.accepted("p1")
    assert not waiter.known_open("p1")
    assert waiter.ended_body("p1") == b'{"status":"success"}'


def test_accepted_predictions_are_open_until_heard() -> None:
    waiter = _waiter()
    waiter.accepted("p2")
    assert waiter.known_open("p2") and waiter.ended_body("p2") is None
    waiter._heard(b"p2")  # a large body is not carried
    assert not waiter.known_open("p2") and waiter.ended_body("p2") is None


def test_remembered_bodies_expire_before_redis_forgets_them() -> None:
    waiter = _waiter(ttl=1)  # remembered for ttl - 1 = 0 s
    waiter._heard(b"p3 {}")
    assert waiter.ended_body("p3") is None
