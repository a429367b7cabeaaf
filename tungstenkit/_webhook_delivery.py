"""The webhook worker process of ``tungsten serve``: webhook events become RQ jobs, and RQ
delivers them, retrying with backoff.

Two threads:

- ``TUNGSTEN_WEBHOOK_CONCURRENCY`` lanes, each an RQ ``SimpleWorker`` on the namespace's
  webhook queue (JSON serializer) running ``deliver`` jobs: the main thread's, and one
  thread for each other lane. A delivery takes at most ``TUNGSTEN_WEBHOOK_TIMEOUT_S``.
  Deliveries to one receiver (host and port) run at most
  ``TUNGSTEN_WEBHOOK_HOST_CONCURRENCY`` at once in a process; one that finds its receiver
  busy is put back for a second later without holding its lane. So receivers that hang
  hold up only lanes of their own, never deliveries to others (13.5: ten hanging
  deliveries used to hold both processes, delaying another receiver's by 49 s), a
  model worker or the API;
- a dispatcher thread which, while it holds the namespace's dispatch lock, turns the
  events the Lua scripts queued into RQ jobs, and enqueues retries whose backoff is over
  (RQ's scheduler, run in this thread rather than in a forked process, so that a killed
  webhook worker leaves no orphan behind), and queues again the jobs a stopped lane
  stranded half-taken (``Dispatcher._requeue_stranded``).

A job holds only a reference (the prediction's id and the event); the delivery reads
the prediction's body when it sends it. So a receiver that is down for long piles up
small jobs, not copies of outputs, and a delivery never outlives its prediction: once
the prediction expired there is nothing to send, and a delivery that failed for good
is kept no longer than the result TTL.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus, get_current_job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.utils import as_text
from rq.worker import WorkerStatus

from tungstenkit._backoff import Backoff
from tungstenkit._errors import FetchError, RedisUnavailable, URLRefused, WebhookFailed
from tungstenkit._fetch import Allowlist, FetchPolicy, host_of, post
from tungstenkit._log_safety import printable, url_for_log
from tungstenkit._logging import configure_logging
from tungstenkit._queue import CONNECTION_ERRORS, REDIS_ERRORS, Keys, WebhookQueue, connect, is_transient
from tungstenkit._settings import Settings
from tungstenkit._supervised_thread import SupervisedThread
from tungstenkit._webhook_protocol import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    event_name,
    payload,
    retry_intervals,
    sign,
)

logger = logging.getLogger(__name__)

#: Exit code when Redis cannot be reached at start (the supervisor retries with backoff).
EXIT_REDIS_UNREACHABLE = 5
#: The dispatch lock lives this long unless its holder refreshes it.
_LOCK_TTL_MS = 10_000
#: Longest the dispatcher waits for an event before it refreshes its lock.
_TAKE_TIMEOUT_S = 1.0
#: Finished deliveries stay in RQ this long, or the result TTL if shorter (a repeated
#: dispatch meanwhile is skipped).
_RESULT_TTL_S = 60
#: How often the dispatch lock's holder looks for jobs stranded in RQ's intermediate list.
_STRANDED_CHECK_S = 5.0
#: A job is stranded once it was seen in the intermediate list, and not started, this long
#: apart: a lane moves a job from there to the started registry within milliseconds.
_STRANDED_AFTER_S = 10.0

_DELIVERY: contextvars.ContextVar[Delivery] = contextvars.ContextVar("tungsten_webhook_delivery")


@dataclass(frozen=True)
class Delivery:
    """How this process sends webhooks: the signing secret, the address guard, the counters,
    and the per-receiver bound."""

    secret: str
    policy: FetchPolicy
    webhooks: WebhookQueue
    hosts: HostSlots = field(default_factory=lambda: HostSlots(DEFAULT_HOST_CONCURRENCY))

    def send(self, url: str, body: bytes, event: str, delivery_id: str) -> None:
        """POST one signed delivery; raises ``URLRefused``, ``FetchError`` or ``WebhookFailed``."""
        headers = {
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            EVENT_HEADER: event_name(event),
            DELIVERY_HEADER: delivery_id,
        }
        status = post(url, body, headers, self.policy)
        if not 200 <= status < 300:
            raise WebhookFailed(f"the receiver answered {status}")


#: Deliveries to one receiver at once, per process, unless the settings say otherwise.
DEFAULT_HOST_CONCURRENCY = 2
#: Seconds before a delivery whose receiver was busy is tried again (not counted as a retry).
_HOST_BUSY_DELAY_S = 1
#: A delivery is put back this many times at most while its receiver stays busy (the
#: prediction's expiry ends it sooner).
_HOST_BUSY_MAX_DEFERRALS = 1_000_000


class HostSlots:
    """How many deliveries to each receiver (host and port) run now, within a bound."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<HostSlots per_host={self.per_host} running={self._running}>"

    def acquire(self, host: str) -> bool:
        """Take a slot for ``host``; False when it has none free."""
        with self._lock:
            if self._running.get(host, 0) >= self.per_host:
                return False
            self._running[host] = self._running.get(host, 0) + 1
            return True

    def release(self, host: str) -> None:
        with self._lock:
            self._running[host] -= 1
            if not self._running[host]:
                del self._running[host]


def deliver(prediction_id: str, event: str, url: str | None = None, body: str | None = None) -> Retry | None:
    """The RQ job: POST one webhook. RQ retries it, with backoff, when it raises.

    The job names the prediction and the event; what to send is read now (jobs queued
    by an older version carry ``url`` and ``body`` themselves). When this process already
    delivers as much as it may to the receiver, the job asks RQ to run it again a moment
    later (a ``Retry`` returned, which uses none of the job's retries after failures).
    """
    delivery = _DELIVERY.get(None)
    if delivery is None:
        raise RuntimeError("webhook deliveries run in the webhook workers of `tungsten serve`")
    job = get_current_job()
    delivery_id = job.id if job is not None else f"webhook-{prediction_id}-{event}"
    where = {"prediction_id": prediction_id, "job_id": delivery_id}
    if url is None or body is None:
        found = delivery.webhooks.event(f"{prediction_id} {event}")
        if found is None and event_name(event) in ("output", "logs"):
            logger.debug(
                "Webhook %r of prediction %s not sent: the prediction ended", event, prediction_id, extra=where
            )
            return None
        if found is None:
            delivery.webhooks.count("failed")
            logger.warning(
                "Webhook %r of prediction %s dropped: the prediction expired before it was delivered",
                event,
                prediction_id,
                extra=where,
            )
            return None
        url, sent = found.url, found.body
    else:
        sent = body.encode()
    host = host_of(url)
    if not delivery.hosts.acquire(host):
        logger.debug("Webhook %r of prediction %s waits: its receiver is busy", event, prediction_id, extra=where)
        return Retry(max=_HOST_BUSY_MAX_DEFERRALS, interval=_HOST_BUSY_DELAY_S)
    try:
        _send(delivery, job, url, payload(prediction_id, event, sent), prediction_id, event, delivery_id)
    finally:
        delivery.hosts.release(host)
    return None


def _send(
    delivery: Delivery, job: Job | None, url: str, body: bytes, prediction_id: str, event: str, delivery_id: str
) -> None:
    """Send one delivery, count it, and log what went wrong (``WebhookFailed`` for RQ to retry)."""
    where = {"prediction_id": prediction_id, "job_id": delivery_id}
    shown = url_for_log(url)
    try:
        delivery.send(url, body, event, delivery_id)
    except URLRefused as exc:
        # Trying again will not make the address allowed: fail now.
        if job is not None:
            job.retries_left = 0
        delivery.webhooks.count("failed")
        logger.warning(
            "Webhook %r of prediction %s to %s refused: %s", event, prediction_id, shown, printable(exc), extra=where
        )
        raise WebhookFailed(f"{shown}: {printable(exc)}") from None
    except (FetchError, WebhookFailed) as exc:
        last = job is None or not job.retries_left
        delivery.webhooks.count("failed" if last else "retried")
        logger.warning(
            "Webhook %r of prediction %s to %s failed: %s%s",
            event,
            prediction_id,
            shown,
            printable(exc),
            "; giving up" if last else "; it will be retried",
            extra=where,
        )
        raise WebhookFailed(f"{shown}: {printable(exc)}") from None
    delivery.webhooks.count("delivered")
    logger.debug("Webhook %r of prediction %s delivered to %s", event, prediction_id, shown, extra=where)


#: How often the RQ worker's command listener wakes (see ``WebhookWorker.subscribe``).
_COMMAND_POLL_S = 1.0


class WebhookWorker(SimpleWorker):
    """An RQ worker whose jobs deliver webhooks with this process's ``Delivery``: one lane.

    A ``SimpleWorker`` runs each job in this process: no fork per delivery, and no fork
    while the dispatcher thread runs. Lanes run side by side on threads, so a job's time
    limit is a timer (RQ's default, ``SIGALRM``, works on the main thread only), and only
    the main thread's lane handles signals.
    """

    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args: Any, delivery: Delivery, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivery = delivery

    def execute_job(self, job: Job, queue: Queue) -> Any:
        token = _DELIVERY.set(self.delivery)
        try:
            return super().execute_job(job, queue)
        finally:
            _DELIVERY.reset(token)

    def subscribe(self) -> None:
        """RQ's command channel, with a listening thread that wakes every second.

        RQ's own waits up to 60 s per read, and its ``unsubscribe`` closes the connection
        while that thread may still be reading it: a stopping worker then hung for up to a
        minute (and a finished job's 60 s result could expire meanwhile).
        """
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # RQ declares the attribute as None (its own thread is started elsewhere).
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=_COMMAND_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._install_signal_handlers()

    def stop_after_job(self) -> None:
        """Stop once the job running now (if any) is done (for lanes on other threads)."""
        self._stop_requested = True

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if isinstance(exc_info[1], WebhookFailed):
            return  # an expected failure, which ``deliver`` logged in one line
        super().handle_exception(job, *exc_info)


class Dispatcher(SupervisedThread):
    """Turns queued webhook events into RQ jobs, and hands RQ the retries that are due.

    It retries whatever goes wrong, with backoff; should it die all the same, its failure
    handler ends the process (the supervisor starts another).
    """

    def __init__(
        self,
        webhooks: WebhookQueue,
        queue: Queue,
        scheduler: RQScheduler,
        settings: Settings,
        owner: str,
        on_failure: Callable[[SupervisedThread, BaseException], None] | None = None,
    ) -> None:
        super().__init__("tungsten-webhook-dispatcher", on_failure)
        self._webhooks = webhooks
        self._queue = queue
        self._scheduler = scheduler
        self._owner = owner
        self._timeout_s = int(settings.webhook_timeout_s) + 10
        # A delivery that failed for good is kept as long as its prediction could be read.
        self._failure_ttl_s = settings.result_ttl_s
        self._result_ttl_s = min(_RESULT_TTL_S, settings.result_ttl_s)
        self._retry = (
            Retry(
                max=settings.webhook_retries,
                interval=retry_intervals(settings.webhook_retries, settings.webhook_backoff_s),
            )
            if settings.webhook_retries
            else None
        )
        self._halt = threading.Event()
        self._retries_checked_at = 0.0
        self._stranded_checked_at = 0.0
        #: Job ids found in RQ's intermediate list and not started: when first seen there.
        self._stranded_since: dict[str, float] = {}
        self.dispatched = 0

    def __repr__(self) -> str:
        return f"<Dispatcher {self._owner} dispatched={self.dispatched}>"

    def stop(self) -> None:
        self._halt.set()

    def loop(self) -> None:
        backoff = Backoff()
        holding = False
        while not self._halt.is_set():
            try:
                self._enqueue_due_retries()
                if not self._webhooks.hold_lock(self._owner, _LOCK_TTL_MS):
                    holding = False
                    self._halt.wait(_TAKE_TIMEOUT_S)
                    continue
                if not holding:
                    holding = True
                    # What a dispatcher that died was in the middle of.
                    for left in self._webhooks.dispatching():
                        if not self._webhooks.hold_lock(self._owner, _LOCK_TTL_MS):
                            break
                        self._dispatch(left)
                self._requeue_stranded()
                item = self._webhooks.take(_TAKE_TIMEOUT_S)
                if item:
                    self._dispatch(item)
                backoff.reset()
            except Exception as exc:  # the dispatcher must outlive any one failure
                holding = False
                if is_transient(exc):
                    logger.warning(
                        "Redis unavailable while dispatching webhooks (%s: %s); retrying", type(exc).__name__, exc
                    )
                else:
                    logger.exception("Dispatching webhooks failed; retrying")
                backoff.wait(self._halt)
        try:
            self._webhooks.release_lock(self._owner)
            self._scheduler.release_locks()
        except REDIS_ERRORS as exc:
            logger.debug("Could not release the webhook locks: %s", exc)

    def _enqueue_due_retries(self) -> None:
        """Once a second, hand RQ the retries whose backoff is over (the job of its scheduler)."""
        now = time.monotonic()
        if now - self._retries_checked_at < _TAKE_TIMEOUT_S:
            return
        self._retries_checked_at = now
        self._scheduler.acquire_locks()
        if self._scheduler.acquired_locks:
            self._scheduler.enqueue_scheduled_jobs()

    def _requeue_stranded(self) -> None:
        """Put back at the head of the queue the jobs stranded in RQ's intermediate list.

        A lane takes a job by moving its id from the queue to the intermediate list, then
        (in a second round trip) to the started registry. A lane killed between the two, or
        whose second write Redis refused (``maxmemory`` reached, a failover), strands the job:
        RQ's own cleanup looks only every ``maintenance_interval`` (10 minutes), marks a job
        after its first look, and then *fails* it, so the webhook is never sent and the
        entry outlives its prediction. Here a job seen stranded for ``_STRANDED_AFTER_S`` is
        queued again, in one transaction with its removal from the intermediate list. A lane
        that was only paused there and resumes would deliver it a second time: webhooks are
        at least once (receivers tell repeats by the prediction and event).
        """
        now = time.monotonic()
        if now - self._stranded_checked_at < _STRANDED_CHECK_S:
            return
        self._stranded_checked_at = now
        client = self._queue.connection
        intermediate = self._queue.intermediate_queue_key
        waiting = {as_text(raw) for raw in client.lrange(intermediate, 0, -1)}
        stranded = waiting - set(self._queue.started_job_registry.get_job_ids(cleanup=False)) if waiting else set()
        self._stranded_since = {job_id: self._stranded_since.get(job_id, now) for job_id in stranded}
        for job_id, since in list(self._stranded_since.items()):
            if now - since < _STRANDED_AFTER_S:
                continue
            del self._stranded_since[job_id]
            with client.pipeline(transaction=True) as pipe:
                pipe.lrem(intermediate, 1, job_id)
                if Job.exists(job_id, connection=client):
                    Job(job_id, connection=client, serializer=JSONSerializer).set_status(
                        JobStatus.QUEUED, pipeline=pipe
                    )
                    self._queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                    logger.warning("Webhook job %s was stranded by a lane that stopped; queued again", job_id)
                pipe.execute()

    def _dispatch(self, item: str) -> None:
        try:
            self._enqueue(item)
        except CONNECTION_ERRORS:
            raise  # the event stays in the dispatching list and is tried again
        except redis.RedisError:
            raise
        except Exception:  # one bad event must not stop the others
            logger.exception("Webhook event %r dropped: it could not be made into a job", item)
        self._webhooks.dispatched(item)

    def _enqueue(self, item: str) -> None:
        reference = self._webhooks.pending(item)
        if reference is None:
            logger.warning("Webhook event %r dropped: its prediction expired before it was sent", item)
            return
        prediction_id, event = reference
        # RQ ids take letters, digits, "_" and "-": an output event's window has colons.
        job_id = f"webhook-{prediction_id}-{event.replace(':', '_')}"
        if not Job.exists(job_id, connection=self._queue.connection):
            self._queue.enqueue_call(
                "tungstenkit._webhook_delivery.deliver",
                kwargs={"prediction_id": prediction_id, "event": event},
                job_id=job_id,
                timeout=self._timeout_s,
                result_ttl=self._result_ttl_s,
                failure_ttl=self._failure_ttl_s,
                retry=self._retry,
                description=f"webhook {event} of prediction {prediction_id}",
            )
            self.dispatched += 1


def webhook_fetch_policy(settings: Settings) -> FetchPolicy:
    """The address guard and time limits of webhook deliveries (those of URL inputs)."""
    return FetchPolicy(
        allowlist=Allowlist.parse(settings.url_allowlist),
        connect_timeout_s=min(settings.url_connect_timeout_s, settings.webhook_timeout_s),
        read_timeout_s=settings.webhook_timeout_s,
        total_timeout_s=settings.webhook_timeout_s,
        max_redirects=0,
    )


def run_webhook_worker(settings: Settings, *, redis_url: str, namespace: str, log_level: str) -> int:
    """Run one webhook worker until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(log_level, "webhooks", settings.log_format)
    try:
        client = connect(redis_url, settings.redis_connect_timeout_s, settings.redis_tls)
    except RedisUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_REDIS_UNREACHABLE
    keys = Keys(namespace)
    webhooks = WebhookQueue(client, keys)
    secret = settings.webhook_secret or webhooks.secret()
    queue = Queue(keys.webhook_queue, connection=client, serializer=JSONSerializer)
    name = f"tungsten-webhooks-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    rq_level = "DEBUG" if log_level in ("debug", "trace") else "WARNING"
    delivery = Delivery(secret, webhook_fetch_policy(settings), webhooks, HostSlots(settings.webhook_host_concurrency))
    lanes = [
        WebhookWorker([queue], connection=client, serializer=JSONSerializer, name=f"{name}-{n}", delivery=delivery)
        for n in range(settings.webhook_concurrency)
    ]
    scheduler = RQScheduler([queue], connection=client, serializer=JSONSerializer, logging_level=rq_level)
    dispatcher = Dispatcher(webhooks, queue, scheduler, settings, owner=name)
    dispatcher.start()
    threads = [
        threading.Thread(
            target=lane.work, kwargs={"logging_level": rq_level}, name=f"tungsten-webhook-lane-{n}", daemon=True
        )
        for n, lane in enumerate(lanes[1:], 1)
    ]
    for thread in threads:
        thread.start()
    logger.info(
        "Webhook worker %s delivering from RQ queue %s: %d at once, %d per receiver",
        name,
        keys.webhook_queue,
        len(lanes),
        settings.webhook_host_concurrency,
    )
    try:
        lanes[0].work(logging_level=rq_level, with_scheduler=False)
    finally:
        _stop_lanes(lanes[1:], settings.webhook_timeout_s + 5)
        dispatcher.stop()
        dispatcher.join(timeout=5)
    return 0


def _stop_lanes(lanes: list[WebhookWorker], timeout_s: float) -> None:
    """Let the lanes on threads finish the deliveries they are making (within
    ``timeout_s``); those waiting for a job are left to end with the process."""
    for lane in lanes:
        lane.stop_after_job()
    deadline = time.monotonic() + timeout_s
    while any(lane.get_state() == WorkerStatus.BUSY for lane in lanes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for lane in lanes:
        try:
            lane.register_death()
        except REDIS_ERRORS as exc:
            logger.debug("Could not unregister webhook lane %s: %s", lane.name, exc)
