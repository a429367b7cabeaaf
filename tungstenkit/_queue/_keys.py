"""Key names, the errors that mean Redis is unreachable, and the clock the data model uses."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import redis
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

GROUP = "workers"
#: Batches per live worker that the worker stream and the workers may hold before new
#: entries wait for admission by priority and tenant (``lua/admission.lua``): the batch
#: a worker runs and the one it reads ahead.
ADMITTED_BATCHES_PER_WORKER = 2
#: Priorities a prediction may have, highest first.
PRIORITIES = ("high", "normal", "low")
#: A dead consumer with nothing pending is removed from the group after this idle time.
FORGET_IDLE_CONSUMER_MS = 60_000
#: How long a worker's running key outlives its last batch start; a dead worker's
#: key must survive until another worker reclaims its entries.
RUNNING_KEY_TTL_S = 7 * 24 * 3600

#: The errors that mean Redis could not be reached or did not answer in time.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
#: Those, and every error redis-py raises (a refused command as well).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, *CONNECTION_ERRORS)

#: Replies with which Redis refuses a command for a while rather than for good: it is out
#: of memory (``noeviction``), a replica (a failover is under way), loading its data,
#: running a long script, unable to persist, or a cluster is reconfiguring; or it ended
#: a blocking read because its role changed. Retrying later succeeds. (redis-py raises a class of its own for some, a plain ``ResponseError`` whose
#: message starts with the code for the others.)
TRANSIENT_REPLY_ERRORS: tuple[type[BaseException], ...] = (
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
)
_TRANSIENT_REPLY_CODES = (
    "BUSY ",
    "MISCONF ",
    "NOREPLICAS ",
    "LOADING ",
    "READONLY ",
    "OOM ",
    "MASTERDOWN ",
    "UNBLOCKED ",
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is away or refusing for a while (retry later), rather
    than that the command itself is wrong (retrying fails the same way)."""
    if isinstance(exc, (*CONNECTION_ERRORS, *TRANSIENT_REPLY_ERRORS)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_TRANSIENT_REPLY_CODES)


class Keys:
    """Key and channel names of one namespace."""

    def __init__(self, namespace: str) -> None:
        if not namespace or any(c in namespace for c in "{} \n"):
            raise ValueError(f"invalid namespace {namespace!r}")
        self.namespace = namespace
        self.prefix = f"tungsten:{{{namespace}}}:"
        self.queue = self.prefix + "queue"
        self.queued = self.prefix + "queued"
        self.workers = self.prefix + "workers"
        self.done_channel = self.prefix + "done"
        #: Channel: space-separated ids of predictions that got new events (``events:<id>``).
        self.events_channel = self.prefix + "events"
        self.stop_channel = self.prefix + "stop"
        #: Channel: the name of a waiting stream that started (``lua/submit.lua``), for which
        #: workers' read-ahead of a lower priority or another tenant steps aside
        #: (``lua/step_aside.lua``).
        self.waits_channel = self.prefix + "waits"
        #: Waiting streams are ``<wait_prefix><priority>:<tenant>``.
        self.wait_prefix = self.prefix + "wait:"
        self.prediction_prefix = self.prefix + "pred:"
        self.worker_prefix = self.prefix + "worker:"
        self.metrics = self.prefix + "metrics"
        self.metrics_applied = self.prefix + "metrics:applied"
        self.webhooks = self.prefix + "webhooks"
        self.webhooks_dispatching = self.prefix + "webhooks:dispatching"
        self.webhooks_lock = self.prefix + "webhooks:lock"
        self.webhooks_secret = self.prefix + "webhooks:secret"
        #: The digest of the model the namespace's API serves (workers of another refuse to join).
        self.model_digest = self.prefix + "model:digest"
        #: API keys: key id -> its record (``_api_keys.ApiKey`` as JSON).
        self.api_keys = self.prefix + "apikeys"
        #: The RQ queue of this namespace's webhook deliveries (RQ's own keys).
        self.webhook_queue = f"tungsten-webhooks-{namespace}"

    def prediction(self, prediction_id: str) -> str:
        return self.prediction_prefix + prediction_id

    def events(self, prediction_id: str) -> str:
        """The stream of a prediction's output, progress and log events (see ``_events``)."""
        return f"{self.prefix}events:{prediction_id}"

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id

    def running(self, worker_id: str) -> str:
        return f"{self.prefix}running:{worker_id}"

    def file(self, name: str) -> str:
        return f"{self.prefix}file:{name}"

    def idempotency(self, digest: str) -> str:
        """Where an ``Idempotency-Key`` (hashed with its tenant: ``digest``) names its prediction."""
        return f"{self.prefix}idem:{digest}"

    def owner_queued(self, owner: str) -> str:
        """Inputs waiting or running of the predictions of one API key's owner. The Lua
        scripts name it from ``queued`` the same way, from a prediction's ``owner``."""
        return f"{self.queued}:{owner}"

    def rate(self, key_id: str) -> str:
        """The token bucket of one API key's request rate."""
        return f"{self.prefix}rate:{key_id}"


def worker_id_for(pid: int, tag: str) -> str:
    """A worker's id (its consumer name and registry key): ``host:pid:tag``. ``tungsten
    serve`` chooses the tag of each worker it starts, so it knows the id of one it sees exit."""
    return f"{socket.gethostname()}:{pid}:{tag}"


def eviction_warning(client: redis.Redis) -> str | None:
    """A warning if this Redis may evict keys when full (they would be predictions and
    heartbeats: lost work and false crash verdicts); None if it refuses writes instead."""
    try:
        memory = client.info("memory")
    except redis.RedisError:
        return None  # INFO can be disabled on managed Redis; nothing to tell then
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy == "noeviction" or not int(memory.get("maxmemory", 0) or 0):
        return None
    return (
        f"Redis evicts keys when it is full (maxmemory-policy {policy}): predictions and worker heartbeats "
        "can be lost. Set maxmemory-policy noeviction (Redis then refuses new work when full)."
    )


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string, as predictions report it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
