"""The clients made from a Sentinel URL follow the primary: killed, or demoted by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from tests.sentinel.replicas import SentinelSet
from tests.support import wait_for
from tungstenkit._errors import NotReplicated, RedisUnavailable
from tungstenkit._queue import (
    CONNECTION_ERRORS,
    AsyncPredictionQueue,
    Keys,
    async_client,
    close_async,
    close_sync,
    connect,
    split_into_chunks,
)

KEYS = Keys("sentinel-test")


def _chunks(n: int = 2) -> list[Any]:
    return split_into_chunks([json.dumps({"x": i}) for i in range(n)], ["g"] * n, 4)


def _answer(call: Any, *args: Any) -> Any:
    """The call's result, or None while Redis is unreachable."""
    try:
        return call(*args) or True
    except CONNECTION_ERRORS:
        return None


def test_a_blocking_client_follows_a_killed_primary(sentinels: SentinelSet) -> None:
    client = connect(sentinels.url, 10)
    try:
        client.set("k", "before")
        assert client.wait(1, 5000) == 1  # on the replica too
        old = sentinels.kill_primary()
        # While the Sentinels still name the dead primary, a call fails as "unreachable",
        # which every caller retries.
        with pytest.raises(CONNECTION_ERRORS):
            client.set("k", "during")
        new = sentinels.wait_new_primary(old)
        assert wait_for(lambda: _answer(client.get, "k"), 10, what="the client to reach the new primary") == b"before"
        client.set("k", "after")
        assert sentinels.node_client(new).get("k") == b"after"
    finally:
        close_sync(client)


def test_a_blocking_clients_readonly_reply_is_a_dropped_connection(sentinels: SentinelSet) -> None:
    client = connect(sentinels.url, 10)
    try:
        client.set("k", "1")
        new = sentinels.move_primary_by_hand()
        # The old primary answers READONLY: reported as a lost connection, so that the
        # worker threads' retry (which owns this client) reconnects, to the new primary.
        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            client.set("k", "2")
        client.set("k", "3")
        assert sentinels.node_client(new).get("k") == b"3"
    finally:
        close_sync(client)


def _api_queue(url: str, **options: Any) -> tuple[redis.asyncio.Redis, AsyncPredictionQueue]:
    client = async_client(url, max_connections=4, timeout_s=5)
    return client, AsyncPredictionQueue(client, KEYS, result_ttl_s=60, max_queued_inputs=0, **options)


def test_the_api_retries_a_readonly_reply_on_the_new_primary(sentinels: SentinelSet) -> None:
    async def go() -> int:
        client, queue = _api_queue(sentinels.url)
        try:
            await queue.submit("p1", _chunks(), 2)
            new = sentinels.move_primary_by_hand()
            # Its pooled connection meets READONLY; the call is tried again on a fresh
            # connection to the new primary, and the client never hears of it.
            await queue.submit("p2", _chunks(), 2)
            assert (await queue.fetch("p2")) is not None
            return new
        finally:
            await close_async(client)

    new = asyncio.run(go())
    assert sentinels.node_client(new).exists(KEYS.prediction("p2")) == 1


def test_the_api_answers_unavailable_only_until_a_primary_is_known(sentinels: SentinelSet) -> None:
    async def go() -> int:
        client, queue = _api_queue(sentinels.url)
        try:
            await queue.submit("before", _chunks(), 2)
            # Replication is asynchronous: let the replica have it before the primary dies,
            # so that what this test checks is availability, not the (documented) loss.
            replicas = [sentinels.node_client(p) for p in sentinels.node_ports() if p != sentinels.primary_port()]
            wait_for(lambda: all(r.exists(KEYS.prediction("before")) for r in replicas), 10, what="replication")
            old = sentinels.kill_primary()
            # The Sentinels still name the dead primary (they wait a second before they
            # agree it is down): unavailable, which the API answers as 503.
            with pytest.raises(RedisUnavailable):
                await queue.submit("during", _chunks(), 2)
            new = sentinels.wait_new_primary(old)
            # Once they name the new one, the very next call reaches it.
            await queue.submit("after", _chunks(), 2)
            return new
        finally:
            await close_async(client)

    new = asyncio.run(go())
    primary = sentinels.node_client(new)
    assert [primary.exists(KEYS.prediction(p)) for p in ("before", "during", "after")] == [1, 0, 1]


def test_wait_answers_once_the_replica_holds_the_prediction(sentinels: SentinelSet) -> None:
    replica = next(port for port in sentinels.node_ports() if port != sentinels.primary_port())

    async def go() -> None:
        client, queue = _api_queue(sentinels.url, wait_replicas=1, wait_timeout_s=5)
        try:
            await queue.submit("durable", _chunks(), 2)
        finally:
            await close_async(client)

    asyncio.run(go())
    # No polling: WAIT returned only once the replica had it.
    assert sentinels.node_client(replica).exists(KEYS.prediction("durable")) == 1


def test_a_prediction_the_replicas_miss_is_canceled_and_refused(sentinels: SentinelSet) -> None:
    async def go() -> Any:
        client, queue = _api_queue(sentinels.url, wait_replicas=2, wait_timeout_s=0.2)  # there is one replica
        try:
            with pytest.raises(
                NotReplicated, match="2 replicas must hold a prediction within 0.2s, and 1 replicas hold it"
            ):
                await queue.submit("missed", _chunks(), 2)
            return await queue.fetch("missed")
        finally:
            await close_async(client)

    fetched = asyncio.run(go())
    body = json.loads(fetched.body)
    assert (body["status"], body["error_message"]) == ("failed", "Canceled")
    primary = sentinels.node_client(sentinels.primary_port())  # type: ignore[arg-type]
    assert int(primary.get(KEYS.queued) or 0) == 0


def test_reads_do_not_wait_for_the_replicas(sentinels: SentinelSet) -> None:
    async def go() -> list[str]:
        client, queue = _api_queue(sentinels.url, wait_replicas=2, wait_timeout_s=2)
        done: list[str] = []
        try:
            submit = asyncio.ensure_future(queue.submit("slow", _chunks(), 2))
            fetch = asyncio.ensure_future(queue.fetch("unknown"))
            submit.add_done_callback(lambda _: done.append("submit"))
            fetch.add_done_callback(lambda _: done.append("fetch"))
            assert await fetch is None
            with pytest.raises(NotReplicated):
                await submit
            return done
        finally:
            await close_async(client)

    # Sent in the same turn of the event loop, the read is answered while the submit
    # still waits for a second replica that does not exist.
    assert asyncio.run(go()) == ["fetch", "submit"]


def test_a_submit_sent_twice_is_accepted_once(redis_url: str, namespace: str) -> None:
    """The API tries a call again after its connection dropped, even if the first try
    ran: the second run of the submit script must change nothing."""
    keys = Keys(namespace)

    async def go() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        queue = AsyncPredictionQueue(client, keys, result_ttl_s=60, max_queued_inputs=0)
        try:
            await queue.submit("twice", _chunks(6), 6)
            await queue.submit("twice", _chunks(6), 6)
        finally:
            await client.aclose()

    asyncio.run(go())
    plain = redis.Redis.from_url(redis_url)
    try:
        assert plain.xlen(keys.queue) == 2  # two chunks of at most 4, once
        assert int(plain.get(keys.queued) or 0) == 6
        assert plain.hget(keys.prediction("twice"), "left") == b"2"
    finally:
        plain.close()
