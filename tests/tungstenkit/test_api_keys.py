"""API keys in the data model: records, owners' queued inputs, the request-rate bucket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import redis.asyncio

from tests.tungstenkit.test_queue import Queues, _outputs, _register
from tungstenkit._errors import OwnerQueueFull, QueueFull
from tungstenkit._queue import ApiKeyError, AsyncPredictionQueue, EntryResult, Keys, KeyStore, split_into_chunks
from tungstenkit._queue._api_keys import new_key, parse_token


@pytest.fixture
def queues(redis_url: str, namespace: str) -> Iterator[Queues]:
    q = Queues(redis_url, namespace)
    yield q
    q.client.close()


def _submit(queues: Queues, prediction_id: str, n: int, owner: str, limit: int, chunk: int = 4) -> None:
    inputs = [json.dumps({"x": i}) for i in range(n)]
    chunks = split_into_chunks(inputs, ["g"] * n, chunk)
    queues._api("submit", prediction_id, chunks, n, "", (), None, owner, limit)


def _owner_queued(queues: Queues, owner: str) -> int:
    return int(queues.client.get(queues.keys.owner_queued(owner)) or 0)


def test_a_token_names_its_key_and_redis_holds_only_the_digest_of_its_secret(queues: Queues) -> None:
    store = KeyStore(queues.client, queues.keys)
    record, token = store.create("ci", "predict", rps=5, max_queued=10)
    key_id, secret = parse_token(token)  # type: ignore[misc]
    assert key_id == record.id and record.owner == record.id
    stored = queues.client.hget(queues.keys.api_keys, record.id)
    assert secret.encode() not in stored and token.encode() not in stored
    found = store.get(record.id)
    assert found is not None and found.matches(secret) and not found.matches(secret[:-1] + "x")
    assert "secret_sha256" not in found.listing()


def test_tokens_that_are_not_ours_do_not_parse() -> None:
    _, token = new_key("x", "read")
    assert parse_token(token) is not None
    for bad in ("", "tk_", "Bearer x", token[3:], "tk_ZZZZZZZZZZZZZZZZ_" + "a" * 43, token[:20]):
        assert parse_token(bad) is None


def test_revoke_keeps_the_record_marked_and_unknown_ids_are_errors(queues: Queues) -> None:
    store = KeyStore(queues.client, queues.keys)
    record, _ = store.create("old", "admin")
    assert store.revoke(record.id).revoked
    assert [k.id for k in store.all()] == [record.id] and store.valid() == []
    with pytest.raises(ApiKeyError):
        store.revoke("0" * 16)
    with pytest.raises(ApiKeyError):
        store.create("successor", "predict", owner=record.id)  # of a revoked key


def test_a_key_made_for_another_shares_its_owner(queues: Queues) -> None:
    store = KeyStore(queues.client, queues.keys)
    first, _ = store.create("first", "predict")
    reader, _ = store.create("dashboard", "read", owner=first.id)
    assert reader.owner == first.id


def test_an_owners_queued_inputs_are_bounded_and_released_when_predictions_end(queues: Queues) -> None:
    _submit(queues, "a", 3, "k1", 5)
    with pytest.raises(OwnerQueueFull):
        _submit(queues, "b", 3, "k1", 5)
    assert queues.get("b") is None
    _submit(queues, "c", 3, "k2", 5)  # another owner has its own count
    _submit(queues, "d", 2, "k1", 5)
    assert (_owner_queued(queues, "k1"), _owner_queued(queues, "k2"), queues.queued()) == (5, 3, 8)
    assert queues.client.hget(queues.keys.prediction("a"), "owner") == b"k1"

    entries = {e.prediction_id: e for e in queues.read()}
    queues.start(["a"], [entries["a"].sid])
    queues.finish([_outputs(entries["a"])])  # success
    assert _owner_queued(queues, "k1") == 2
    queues.cancel("d")  # cancel
    assert _owner_queued(queues, "k1") == 0
    queues.finish([EntryResult(entries["c"], EntryResult.ERROR, "ValueError: no")])  # failure
    assert (_owner_queued(queues, "k2"), queues.queued()) == (0, 0)


def test_the_queue_bound_still_comes_first(redis_url: str, namespace: str) -> None:
    queues = Queues(redis_url, namespace, limit=4)
    _submit(queues, "a", 3, "k1", 0)
    with pytest.raises(QueueFull):
        _submit(queues, "b", 3, "k1", 10)
    assert _owner_queued(queues, "k1") == 3
    queues.client.close()


def test_a_prediction_of_several_entries_releases_each_as_it_ends(queues: Queues) -> None:
    _submit(queues, "p", 8, "k1", 8, chunk=4)
    first, second = queues.read()
    queues.start(["p"], [first.sid, second.sid])
    queues.finish([_outputs(first)])
    assert _owner_queued(queues, "k1") == 4
    queues.finish([_outputs(second)])
    assert _owner_queued(queues, "k1") == 0 and queues.get("p")["status"] == "success"


def test_an_input_failed_by_worker_crashes_releases_its_owners_inputs(queues: Queues) -> None:
    _submit(queues, "p", 1, "k1", 3)
    _submit(queues, "q", 2, "k1", 3)
    _register(queues, "alive")
    first = queues.worker.read("w0", 1, None)
    for attempt in range(3):
        worker = f"w{attempt}"
        entries = first if attempt == 0 else queues.worker.reap(worker, crash_limit=3)
        poison = [e for e in entries if e.prediction_id == "p"]
        queues.start(["p"], [poison[0].sid], worker=worker)
    queues.worker.reap("alive", crash_limit=3)
    assert queues.get("p")["status"] == "failed"
    assert _owner_queued(queues, "k1") == 2  # q's inputs, still queued


def test_the_rate_bucket_allows_a_burst_then_says_how_long_to_wait(queues: Queues) -> None:
    waits = [queues._api("take_request", "k1", 2.0) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert 0 < waits[2] <= 0.5
    assert queues._api("take_request", "k2", 2.0) == 0.0  # each key has its own bucket
    assert queues.client.pttl(queues.keys.rate("k1")) > 0  # an idle bucket goes away


def test_requests_that_arrive_together_are_counted_in_one_script_call(redis_url: str, namespace: str) -> None:
    async def go() -> list[float]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            api = AsyncPredictionQueue(client, Keys(namespace), result_ttl_s=60, max_queued_inputs=0)
            await client.script_flush()  # the first flush loads the script again
            return await asyncio.gather(*(api.take_request(key, 2.0) for key in ("a", "a", "a", "b")))
        finally:
            await client.aclose()

    waits = asyncio.run(go())
    assert waits[:2] == [0.0, 0.0] and 0 < waits[2] <= 0.5 and waits[3] == 0.0
