"""Key names, the errors that mean Redis is unreachable, and the clock the data model uses."""

from __future__ import annotations

from datetime import datetime, timezone

import redis

GROUP = "workers"
#: A dead consumer with nothing pending is removed from the group after this idle time.
FORGET_IDLE_CONSUMER_MS = 60_000
#: How long a worker's running key outlives its last batch start; a dead worker's
#: key must survive until another worker reclaims its entries.
RUNNING_KEY_TTL_S = 7 * 24 * 3600

#: The errors that mean Redis could not be reached or did not answer in time.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


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
        self.stop_channel = self.prefix + "stop"
        self.prediction_prefix = self.prefix + "pred:"
        self.metrics = self.prefix + "metrics"
        self.webhooks = self.prefix + "webhooks"
        self.webhooks_dispatching = self.prefix + "webhooks:dispatching"
        self.webhooks_lock = self.prefix + "webhooks:lock"
        self.webhooks_secret = self.prefix + "webhooks:secret"
        #: The digest of the model the namespace's API serves (workers of another refuse to join).
        self.model_digest = self.prefix + "model:digest"
        #: The RQ queue of this namespace's webhook deliveries (RQ's own keys).
        self.webhook_queue = f"tungsten-webhooks-{namespace}"

    def prediction(self, prediction_id: str) -> str:
        return self.prediction_prefix + prediction_id

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def running(self, worker_id: str) -> str:
        return f"{self.prefix}running:{worker_id}"

    def file(self, name: str) -> str:
        return f"{self.prefix}file:{name}"


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string, as predictions report it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
