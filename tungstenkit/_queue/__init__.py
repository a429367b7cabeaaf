"""The Redis data model: every key, script and state transition, for the API and the workers.

Nothing outside this package formats a key or calls a script. A prediction is a hash;
its inputs travel as entries of one stream that the workers read through one consumer
group. What the keys hold is encoded by ``_wire``, which names each field and code once,
for Python and for the Lua scripts (the one-letter names below are its)::

    tungsten:{ns}:queue          stream, one entry per chunk of a prediction's inputs
                                 (p=id s=start n=count g=option group d=JSON list
                                 t=the prediction's input count c=created
                                 w=webhook events, if any; e=deadline, ms of Redis's
                                 clock, if any; q=when it was queued, ms, if it was
                                 moved here from another stream since; r=priority
                                 unless normal, o=tenant unless "-"; y=it stepped
                                 aside once, see ``lua/step_aside.lua``)
    tungsten:{ns}:queued         inputs accepted and not yet finished (the queue bound)
    tungsten:{ns}:pred:<id>      hash: created n (inputs) left entries ("<sid>:<start>:<count>
                                 ...": ``EntryRef``s)
                                 started, result (the ended GET body, ready to send),
                                 o:<start> partial outputs, f:<start> their output
                                 files, crashes:<start>, suspect:<start>:<wid>,
                                 owner (the API key owner it was created for), progress
                                 (JSON) and logs (bounded) of a model that reported them,
                                 hook_at hook_sid out_sid logs_due (output/logs webhooks)
    tungsten:{ns}:done           channel: "<id> <body>" (or "<id>") lines of ended predictions
    tungsten:{ns}:events:<id>    stream of a prediction's output, progress and log events
                                 (e=type d=JSON), capped, expiring with the prediction
    tungsten:{ns}:events         channel: space-separated ids of predictions that started
                                 (start.lua) or got new events (events.lua)
    tungsten:{ns}:stop           channel: ids whose remaining work workers must drop
    tungsten:{ns}:waits          channel: the name of a waiting stream that started, for
                                 which workers' read-ahead may step aside
    tungsten:{ns}:workers        zset index of worker ids (pruned to the live ones)
    tungsten:{ns}:worker:<wid>   hash with a TTL (a worker's heartbeat); gone means dead
    tungsten:{ns}:running:<wid>  the entry ids of the batch a worker is running (for
                                 counting crashes if it dies)
    tungsten:{ns}:wait:<priority>:<tenant>  stream: entries waiting for admission into the
                                 queue (the same fields; see ``lua/admission.lua``)
    tungsten:{ns}:turns:<priority>  list of the waiting streams of a priority, in turn
    tungsten:{ns}:waiting        inputs waiting for admission
    tungsten:{ns}:turn           turns of admission taken (which priority goes next)
    tungsten:{ns}:idem:<digest>  "<prediction id>|<request fingerprint>" of the request first
                                 sent with an Idempotency-Key (digest: SHA-256 of its
                                 tenant and key), kept for the result TTL
    tungsten:{ns}:file:<name>    hash: p (prediction id) t (media type) d (bytes) of an
                                 output file served as ``GET /files/<name>``
    tungsten:{ns}:metrics        hash: counters and histograms (``tungstenkit._measurements``)
    tungsten:{ns}:metrics:applied  hash: each live worker's last applied metrics report
    tungsten:{ns}:webhooks       list: "<id> <event>" for each webhook event that happened;
                                 a prediction that asked for one has hash fields webhook
                                 (URL) and webhook_events, and its entries a field w
    tungsten:{ns}:webhooks:dispatching   list: the events being turned into RQ jobs
    tungsten:{ns}:webhooks:lock  who dispatches webhook events (one process at a time)
    tungsten:{ns}:webhooks:secret  the generated signing secret (without a configured one)
    tungsten:{ns}:apikeys        hash: API key id -> its record (JSON; the SHA-256 of its
                                 secret, never the secret); see ``_api_keys``
    tungsten:{ns}:queued:<owner> inputs accepted and not yet finished of the predictions
                                 of one API key owner (hash field ``owner``)
    tungsten:{ns}:rate:<key id>  hash: tokens at: an API key's request-rate bucket
    tungsten:{ns}:model:digest   the digest of the model ``tungsten serve`` serves (absent for
                                 a model served from a folder); read by starting workers

Webhook deliveries are RQ jobs on the queue ``Keys.webhook_queue`` (RQ's own keys, its
JSON serializer).

The embedded Redis has a user per process role (``_acl``: the API, the workers, the
webhook workers, and ``admin`` for ``tungsten serve`` itself), each allowed only the
commands it sends, those its scripts call, and the namespace's keys and channels
(``tungsten:{ns}:*``, and RQ's ``rq:*`` for the webhook workers). A new script, or a
command a process sends itself, needs its role's grant there, or it fails only with
the embedded Redis: ``tests/tungstenkit/test_acl.py`` finds those missing from the code.

Clients come from ``_connections`` (one Redis, or a primary found through Redis
Sentinel that they follow across a failover); nothing else turns a URL into a client.

The ``{ns}`` hash tag keeps every key of a namespace in one Redis Cluster slot, as Lua
needs. Values are JSON or plain strings: nothing read from Redis is ever unpickled.
State changes are Lua scripts (``lua/``), so processes on many machines never race.
A worker may start, finish or hand back only the entries it owns, those pending for it
in the consumer group (``lua/fence.lua``): a worker presumed dead that wakes up again
cannot overwrite what its successor wrote.
"""

from tungstenkit._queue._acl import Role, users
from tungstenkit._queue._api_keys import SCOPES, ApiKey, ApiKeyError, KeyStore
from tungstenkit._queue._connections import (
    SentinelAddress,
    async_client,
    async_subscriber,
    check_url,
    close_async,
    close_sync,
    connect,
    redacted,
    sync_client,
)
from tungstenkit._queue._keys import (
    CONNECTION_ERRORS,
    GROUP,
    PRIORITIES,
    REDIS_ERRORS,
    RUNNING_KEY_TTL_S,
    Keys,
    eviction_warning,
    is_transient,
    now_iso,
    worker_id_for,
)
from tungstenkit._queue._model_digest import publish_model_digest, served_model_digest
from tungstenkit._queue._monitoring import Snapshot, WorkerInfo, find_namespaces, read_snapshot
from tungstenkit._queue._prediction_queue import AsyncPredictionQueue, Idempotency
from tungstenkit._queue._records import (
    EVENTS_PER_READ,
    FILE_TTL_FACTOR,
    STORED_EVENTS,
    BatchStart,
    Chunk,
    EntryResult,
    EventsRead,
    Fetched,
    PredictionEvents,
    StoredFile,
    read_prediction,
    render_body,
    render_open,
    split_into_chunks,
)
from tungstenkit._queue._webhook_events import WebhookEvent, WebhookQueue
from tungstenkit._queue._wire import Entry, EntryRef, ResultKind, StartFlags, parse_done_message, sid_ms
from tungstenkit._queue._worker_queue import OutputFilesRefused, WaitStarted, WorkerQueue, WriteReport

__all__ = [
    "CONNECTION_ERRORS",
    "EVENTS_PER_READ",
    "FILE_TTL_FACTOR",
    "GROUP",
    "PRIORITIES",
    "REDIS_ERRORS",
    "RUNNING_KEY_TTL_S",
    "SCOPES",
    "STORED_EVENTS",
    "ApiKey",
    "ApiKeyError",
    "AsyncPredictionQueue",
    "BatchStart",
    "Chunk",
    "Entry",
    "EntryRef",
    "EntryResult",
    "EventsRead",
    "Fetched",
    "Idempotency",
    "KeyStore",
    "Keys",
    "OutputFilesRefused",
    "PredictionEvents",
    "ResultKind",
    "Role",
    "SentinelAddress",
    "Snapshot",
    "StartFlags",
    "StoredFile",
    "WaitStarted",
    "WebhookEvent",
    "WebhookQueue",
    "WorkerInfo",
    "WorkerQueue",
    "WriteReport",
    "async_client",
    "async_subscriber",
    "check_url",
    "close_async",
    "close_sync",
    "connect",
    "eviction_warning",
    "find_namespaces",
    "is_transient",
    "now_iso",
    "parse_done_message",
    "publish_model_digest",
    "read_prediction",
    "read_snapshot",
    "redacted",
    "render_body",
    "render_open",
    "served_model_digest",
    "sid_ms",
    "split_into_chunks",
    "sync_client",
    "users",
    "worker_id_for",
]
