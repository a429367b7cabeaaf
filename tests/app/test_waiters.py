"""What an API process remembers from the done channel."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.redisproxy import FreezingProxy, freezing_proxy
from tungstenkit._redis_server import RedisServer
from tungstenkit.app.waiters import CompletionWaiter


async def _heard(waiter: CompletionWaiter, publisher: redis.Redis, message: bytes, prediction_id: str) -> None:
    """Publish ``message`` on the done channel until the listener has taken it in (the
    first may go out before Redis has processed the listener's SUBSCRIBE)."""
    before = waiter.heard_count
    for _ in range(50):
        publisher.publish("done", message)
        if await _poll(lambda: waiter.heard_count > before, 0.2):
            return
    raise AssertionError(f"the listener never heard {prediction_id}")


def _with_listener(redis_url: str, ttl: float, scenario: Any, events_channel: str | None = None) -> None:
    """Run ``scenario(waiter, publisher)`` with a real listener subscribed to a real Redis."""
    publisher = redis.Redis.from_url(redis_url)

    async def go() -> None:
        subscriber = redis.asyncio.Redis.from_url(redis_url)
        waiter = CompletionWaiter(subscriber, "done", ttl, events_channel)
        task = waiter.start()
        try:
            await asyncio.wait_for(waiter.connected.wait(), 10)
            await scenario(waiter, publisher)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await subscriber.aclose()

    try:
        asyncio.run(go())
    finally:
        publisher.close()


def test_an_announcement_before_the_submit_reply_is_not_lost(private_redis: RedisServer) -> None:
    async def scenario(waiter: CompletionWaiter, publisher: redis.Redis) -> None:
        await _heard(waiter, publisher, b'p1 {"status":"success"}', "p1")  # the worker beat the submit's reply
        waiter.accepted("p1")
        assert not waiter.known_open("p1")
        assert waiter.ended_body("p1") == b'{"status":"success"}'

    _with_listener(private_redis.url, 60, scenario)


def test_accepted_predictions_are_open_until_heard(private_redis: RedisServer) -> None:
    async def scenario(waiter: CompletionWaiter, publisher: redis.Redis) -> None:
        waiter.accepted("p2")
        assert waiter.known_open("p2") and waiter.ended_body("p2") is None
        with waiter.watch("p2") as ended:
            await _heard(waiter, publisher, b"p2", "p2")  # a large body is not carried
            assert ended.is_set()
        assert not waiter.known_open("p2") and waiter.ended_body("p2") is None

    _with_listener(private_redis.url, 60, scenario)


def test_remembered_bodies_expire_before_redis_forgets_them(private_redis: RedisServer) -> None:
    async def scenario(waiter: CompletionWaiter, publisher: redis.Redis) -> None:
        await _heard(waiter, publisher, b"p3 {}", "p3")  # remembered for ttl - 1 = 0 s
        assert waiter.ended_body("p3") is None

    _with_listener(private_redis.url, 1, scenario)


async def _poll(condition: Any, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)  # the poll interval, not a synchronisation
    return True


async def _listen_until(
    waiter: CompletionWaiter, publisher: redis.Redis, channel: str, condition: Any, seconds: float
) -> bool:
    """Publish an announcement every 0.2 s until the waiter heard it or ``seconds`` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        publisher.publish(channel, b'p9 {"status":"success"}')
        if condition():
            return True
        await asyncio.sleep(0.2)  # the poll interval, not a synchronisation
    return False


def test_the_listener_outlives_redis_refusing_it(private_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A reply error (here: the ACL forbids the channel for a while) is retried, not fatal."""
    admin = redis.Redis.from_url(private_redis.url)

    async def scenario() -> tuple[bool, bool]:
        subscriber = redis.asyncio.Redis.from_url(private_redis.url)
        waiter = CompletionWaiter(subscriber, "done", 60)
        admin.execute_command("ACL", "SETUSER", "default", "resetchannels")  # SUBSCRIBE now answers NOPERM
        task = waiter.start()
        try:
            refused = await _poll(lambda: "NoPermissionError" in caplog.text or task.done(), 10)
            admin.execute_command("ACL", "SETUSER", "default", "allchannels")
            assert refused
            heard = await _listen_until(waiter, admin, "done", lambda: waiter.ended_body("p9"), 15)
            return heard, not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await subscriber.aclose()

    try:
        heard, running = asyncio.run(scenario())
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "allchannels")
        admin.close()
    assert heard and running


def test_the_listener_replaces_a_connection_that_went_silent(private_redis: RedisServer) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    assert private_redis.port is not None

    async def scenario(proxy: FreezingProxy) -> bool:
        subscriber = redis.asyncio.Redis.from_url(proxy.url(private_redis.password))
        waiter = CompletionWaiter(subscriber, "done", 60)
        task = waiter.start()
        try:
            await asyncio.wait_for(waiter.connected.wait(), 5)
            proxy.freeze()  # no error, just silence: a partition, a frozen load balancer
            return await _listen_until(waiter, admin, "done", lambda: waiter.ended_body("p9"), 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await subscriber.aclose()

    with freezing_proxy(private_redis.port) as proxy:
        assert asyncio.run(scenario(proxy))
        assert proxy.connections >= 2
    admin.close()


def test_the_events_channel_wakes_event_streams_and_not_long_polls(private_redis: RedisServer) -> None:
    async def scenario(waiter: CompletionWaiter, publisher: redis.Redis) -> None:
        with waiter.watch("p9") as long_poll, waiter.watch("p9", events=True) as stream:
            for _ in range(50):  # until the listener's SUBSCRIBE has been processed
                publisher.publish("events", "p8 p9")
                if await _poll(stream.is_set, 0.2):
                    break
            assert stream.is_set() and not long_poll.is_set()
            stream.clear()
            await _heard(waiter, publisher, b"p9", "p9")  # the end wakes both
            assert stream.is_set() and long_poll.is_set()

    _with_listener(private_redis.url, 60, scenario, "events")
