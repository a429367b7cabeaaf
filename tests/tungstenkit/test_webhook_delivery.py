"""The webhook worker's parts in-process: events become JSON RQ jobs, RQ retries deliveries."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from tests.support import wait_for
from tests.webhooksupport import webhook_receiver
from tungstenkit._fetch import host_of
from tungstenkit._queue import BatchStart, EntryResult, Keys, WebhookQueue, WorkerQueue, split_into_chunks
from tungstenkit._settings import Settings
from tungstenkit._webhook_delivery import Delivery, Dispatcher, HostSlots, WebhookWorker, webhook_fetch_policy
from tungstenkit._webhook_protocol import SIGNATURE_HEADER, verify_signature

SETTINGS = Settings(
    url_allowlist="127.0.0.1:*", webhook_retries=3, webhook_backoff_s=0, webhook_timeout_s=5, result_ttl_s=120
)


class Parts:
    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        # A read timeout above RQ's dequeue timeout, so that RQ uses this client as it is.
        self.client = redis.Redis.from_url(url, socket_timeout=3600)
        self.keys = Keys(namespace)
        self.webhooks = WebhookQueue(self.client, self.keys)
        self.worker_queue = WorkerQueue(self.client, self.keys, result_ttl_s=60)
        self.worker_queue.ensure_group()
        self.queue = Queue(self.keys.webhook_queue, connection=self.client, serializer=JSONSerializer)
        scheduler = RQScheduler([self.queue], connection=self.client, serializer=JSONSerializer)
        self.scheduler = scheduler
        self.dispatcher = Dispatcher(self.webhooks, self.queue, scheduler, SETTINGS, owner="test")

    def finished_prediction(self, prediction_id: str, url: str) -> None:
        """A prediction that asked for a webhook, run to success."""
        import asyncio

        import redis.asyncio

        from tungstenkit._queue import AsyncPredictionQueue

        async def submit() -> None:
            client = redis.asyncio.Redis.from_url(self.url)
            api = AsyncPredictionQueue(client, self.keys, result_ttl_s=60, max_queued_inputs=0)
            await api.submit(prediction_id, split_into_chunks(['{"x": 1}'], ["g"], 4), 1, url, ["completed"])
            await client.aclose()

        asyncio.run(submit())
        (entry,) = self.worker_queue.read("w", 10, None)
        self.worker_queue.write(
            "w",
            [BatchStart([prediction_id], [entry.sid], [True])],
            [EntryResult(entry, EntryResult.OUTPUTS, '{"y": 1}')],
        )

    def dispatch_all(self) -> None:
        while (item := self.webhooks.take(0.1)) is not None:
            self.dispatcher._dispatch(item)

    def deliver_all(self, hosts: HostSlots | None = None) -> None:
        delivery = Delivery("secret", webhook_fetch_policy(SETTINGS), self.webhooks, hosts or HostSlots(2))
        WebhookWorker([self.queue], connection=self.client, serializer=JSONSerializer, delivery=delivery).work(
            burst=True
        )


@pytest.fixture
def parts(redis_url: str, namespace: str) -> Iterator[Parts]:
    found = Parts(redis_url, namespace)
    yield found
    found.client.close()


def test_events_become_json_jobs_once(parts: Parts) -> None:
    parts.finished_prediction("p1", "http://127.0.0.1:9/hook")
    parts.dispatch_all()
    job_id = "webhook-p1-completed"
    raw = parts.client.hget(f"rq:job:{job_id}", "data")
    assert raw is not None
    stored = json.loads(zlib.decompress(raw))  # JSON, never a pickle
    assert stored[0] == "tungstenkit._webhook_delivery.deliver"
    # A reference only: the body is read when the delivery is sent, never copied into RQ.
    assert stored[3] == {"prediction_id": "p1", "event": "completed"}
    assert parts.webhooks.dispatching() == []
    # A dispatcher that died before removing the event: the next one finds the job made.
    parts.client.rpush(parts.keys.webhooks, "p1 completed")
    parts.dispatch_all()
    assert parts.queue.count == 1


def test_events_of_expired_predictions_are_dropped(parts: Parts) -> None:
    parts.client.rpush(parts.keys.webhooks, "gone completed", "not-even-an-event")
    parts.dispatch_all()
    assert parts.queue.count == 0 and parts.webhooks.dispatching() == []


def test_rq_retries_a_failing_delivery_until_it_is_received(parts: Parts) -> None:
    with webhook_receiver(fail_first=2) as receiver:
        parts.finished_prediction("p2", receiver.url)
        parts.dispatch_all()
        parts.deliver_all()  # no backoff in this test: RQ requeues each retry at once
        assert len(receiver.arrived) == 3 and len(receiver.deliveries) == 1
        delivery = receiver.deliveries[0]
        assert verify_signature("secret", delivery.headers[SIGNATURE_HEADER], delivery.body)
    job = Job.fetch("webhook-p2-completed", connection=parts.client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    metrics = parts.client.hgetall(parts.keys.metrics)
    assert metrics[b"webhooks:retried"] == b"2" and metrics[b"webhooks:delivered"] == b"1"


def test_a_delivery_that_keeps_failing_ends_in_rqs_failed_registry(parts: Parts) -> None:
    with webhook_receiver(fail_first=100) as receiver:
        parts.finished_prediction("p3", receiver.url)
        parts.dispatch_all()
        parts.deliver_all()
        assert len(receiver.arrived) == 1 + SETTINGS.webhook_retries
    assert "webhook-p3-completed" in parts.queue.failed_job_registry.get_job_ids()
    assert parts.client.hget(parts.keys.metrics, "webhooks:failed") == b"1"
    # Kept no longer than its prediction could be read (then there is nothing to send).
    assert 0 < parts.client.ttl("rq:job:webhook-p3-completed") <= SETTINGS.result_ttl_s


def test_a_delivery_reads_the_prediction_when_it_is_sent(parts: Parts) -> None:
    with webhook_receiver() as receiver:
        parts.finished_prediction("p5", receiver.url)
        parts.finished_prediction("p6", receiver.url)
        parts.dispatch_all()
        parts.client.delete(parts.keys.prediction("p6"))  # it expired before its delivery ran
        parts.deliver_all()
        assert [json.loads(d.body)["id"] for d in receiver.deliveries] == ["p5"]
        assert json.loads(receiver.deliveries[0].body)["outputs"] == [{"y": 1}]
    assert parts.queue.failed_job_registry.get_job_ids() == []  # nothing to retry for the expired one


def test_a_refused_address_is_not_retried(parts: Parts) -> None:
    parts.finished_prediction("p4", "http://127.0.0.1:9/hook")
    parts.dispatch_all()
    delivery = Delivery("secret", webhook_fetch_policy(Settings()), parts.webhooks)  # no allow-list here
    WebhookWorker([parts.queue], connection=parts.client, serializer=JSONSerializer, delivery=delivery).work(burst=True)
    assert "webhook-p4-completed" in parts.queue.failed_job_registry.get_job_ids()
    metrics = parts.client.hgetall(parts.keys.metrics)
    assert metrics[b"webhooks:failed"] == b"1" and b"webhooks:retried" not in metrics


def test_a_delivery_to_a_busy_receiver_waits_its_turn_without_using_a_retry(parts: Parts) -> None:
    with webhook_receiver() as receiver:
        parts.finished_prediction("p7", receiver.url)
        parts.dispatch_all()
        hosts = HostSlots(1)
        assert hosts.acquire(host_of(receiver.url))  # another delivery to it is under way
        parts.deliver_all(hosts)
        assert not receiver.arrived
        job = Job.fetch("webhook-p7-completed", connection=parts.client, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == SETTINGS.webhook_retries
        hosts.release(host_of(receiver.url))

        def due() -> bool:
            parts.scheduler.acquire_locks()
            parts.scheduler.enqueue_scheduled_jobs()
            return parts.queue.count == 1

        try:
            wait_for(due, 10, interval=0.2, what="the delivery to come back to the queue")
        finally:
            parts.scheduler.release_locks()
            parts.scheduler.connection.connection_pool.disconnect()  # RQ's scheduler made a pool of its own
        parts.deliver_all(hosts)
        assert [json.loads(d.body)["id"] for d in receiver.deliveries] == ["p7"]
    assert parts.client.hget(parts.keys.metrics, "webhooks:retried") is None


def test_a_job_stranded_between_rqs_two_moves_is_queued_again_and_delivered(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tungstenkit._webhook_delivery as webhook_delivery

    monkeypatch.setattr(webhook_delivery, "_STRANDED_CHECK_S", 0.0)
    monkeypatch.setattr(webhook_delivery, "_STRANDED_AFTER_S", 0.5)
    with webhook_receiver() as receiver:
        parts.finished_prediction("p8", receiver.url)
        parts.dispatch_all()
        # A lane's first move (queue -> intermediate list), then it was killed before its second.
        parts.client.lmove(parts.queue.key, parts.queue.intermediate_queue_key)
        parts.client.rpush(parts.queue.intermediate_queue_key, "webhook-gone-completed")  # its job expired
        assert parts.queue.count == 0
        parts.dispatcher._requeue_stranded()  # first seen: a lane may be about to start it
        assert parts.queue.count == 0
        wait_for(
            lambda: parts.dispatcher._requeue_stranded() or parts.queue.count == 1,
            5,
            interval=0.1,
            what="the stranded job to be queued again",
        )
        assert parts.client.lrange(parts.queue.intermediate_queue_key, 0, -1) == []
        parts.deliver_all()
        assert [json.loads(d.body)["id"] for d in receiver.deliveries] == ["p8"]
    assert parts.queue.failed_job_registry.get_job_ids() == []
