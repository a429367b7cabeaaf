"""Redis users of the embedded Redis: each process gets only the commands, keys and
channels it uses.

Redis checks a user's permissions on every command, including each ``redis.call`` a
Lua script makes: a script runs with the rights of the user calling it, and a key or
command it reaches that the user may not use fails the script (whether the key came in
``KEYS`` or was built inside the script, as ``reclaim.lua`` and ``finish.lua`` build
prediction and file keys). So a role is granted the commands its scripts call as well as
those it sends itself, and every key a script touches must match the role's key patterns:
all of them are the namespace's (``tungsten:{ns}:*``).

Roles:

- ``api``: queues and cancels predictions, reads them, their files, the API keys, the
  worker registry and the metrics, counts each key's request rate, and subscribes to the
  namespace's channels;
- ``worker``: reads the stream through the consumer group, starts, finishes and hands
  back entries, takes over dead workers' entries, and beats;
- ``webhooks``: turns webhook events into RQ jobs and runs them (RQ's ``rq:*`` keys and
  channels besides the namespace's);
- ``admin``: ``tungsten serve`` itself and ``tungsten status``: every command, as the
  embedded Redis's single password allowed before.

The ``default`` user (a client that sends no user name) is disabled.
"""

from __future__ import annotations

import re
from enum import Enum

from tungstenkit._queue._keys import Keys
from tungstenkit._queue._scripts import script
from tungstenkit._redis_server import ADMIN_USER


class Role(str, Enum):
    """A Redis user of the embedded Redis, named after the processes that log in as it."""

    API = "api"
    WORKER = "worker"
    WEBHOOKS = "webhooks"
    ADMIN = ADMIN_USER


#: What every role sends: the connection check, and loading a script that Redis forgot
#: (after a restart) before calling it again by its SHA-1.
_COMMON = ("PING", "EVALSHA", "SCRIPT|LOAD", "SCRIPT|EXISTS")
#: Pub/sub, for the roles that listen on a channel.
_SUBSCRIBER = ("SUBSCRIBE", "UNSUBSCRIBE")

#: The scripts each role runs (``lua/``).
SCRIPTS: dict[Role, tuple[str, ...]] = {
    Role.API: ("submit", "cancel", "rate"),
    Role.WORKER: ("admit", "start", "finish", "requeue", "step_aside", "reclaim", "metrics", "prune", "events"),
    Role.WEBHOOKS: (),
}

#: The commands each role sends itself (besides ``_COMMON`` and its scripts').
_DIRECT: dict[Role, tuple[str, ...]] = {
    Role.API: (
        *_SUBSCRIBER,
        "GET",
        "HGET",
        "HMGET",
        "HGETALL",
        "ZRANGE",
        "LLEN",
        "DEL",  # the idempotency record of a submit that failed
        "XRANGE",  # a prediction's events stream
        # TUNGSTEN_REDIS_WAIT_REPLICAS (replicas of an embedded Redis are not expected,
        # but the API sends WAIT whenever it is set).
        "WAIT",
    ),
    Role.WORKER: (
        *_SUBSCRIBER,
        "GET",  # the served model's digest
        "INFO",  # whether Redis evicts keys when full (a warning at start)
        "XGROUP|CREATE",
        "XGROUP|DELCONSUMER",
        "XREADGROUP",
        "XINFO|CONSUMERS",
        "XPENDING",
        "XCLAIM",
        "XACK",
        "XDEL",
        "EXISTS",
        "DEL",
        "HSET",
        "PEXPIRE",
        "ZADD",
        "ZREM",
        "TIME",  # Redis's clock, with each heartbeat (deadlines are in it)
    ),
    Role.WEBHOOKS: (
        *_SUBSCRIBER,
        # The dispatcher: the webhook lists, the dispatch lock (redis-py's ``Lock``, whose
        # scripts call GET, PEXPIRE, PTTL and DEL), the signing secret and the counters.
        "BLMOVE",
        "LRANGE",
        "LREM",
        "HMGET",
        "HGET",
        "GET",
        "SET",
        "PEXPIRE",
        "PTTL",
        "DEL",
        "HINCRBY",
        "HEXISTS",
        "XRANGE",  # what output and logs webhooks send, from a prediction's events
        # RQ, as far as these processes use it (a SimpleWorker, enqueueing, Job.exists,
        # the scheduler's locks and due retries, registries, results), with the commands
        # of its Lua scripts. Not CLIENT LIST: RQ reads its own address with CLIENT INFO.
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        "EXISTS",
        "EXPIRE",
        "PERSIST",
        "HSET",
        "HGETALL",
        "HINCRBYFLOAT",
        "HEXISTS",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "BLPOP",
        "LMOVE",
        "LPOS",
        "LLEN",
        "SADD",
        "SREM",
        "SMEMBERS",
        "SCARD",
        "ZADD",
        "ZREM",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREMRANGEBYSCORE",
        "ZCARD",
        "ZCOUNT",
        "ZSCORE",
        "ZPOPMIN",
        "XADD",
        "XREVRANGE",
        "XLEN",
        "PUBLISH",
        "CLIENT|SETNAME",
        "CLIENT|INFO",
        "INFO",  # RQ reads the server's version
    ),
}

#: Keys and channels of RQ (webhook deliveries): its queues, jobs and registries are
#: ``rq:*`` (with global sets ``rq:queues`` and ``rq:workers``, so they cannot be
#: narrowed to one namespace), its worker command channels ``rq:pubsub:*``.
RQ_PATTERN = "rq:*"

_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")
#: ``finish.lua`` calls a command named by its caller (``files_do(files, 'EXPIRE', ttl)``).
_INDIRECT_CALL = re.compile(r"files_do\(\s*\w+\s*,\s*'([A-Za-z]+)'")


def script_commands(name: str) -> set[str]:
    """The commands script ``name`` calls (with its shared functions)."""
    source = script(name).source
    return {command.upper() for command in _CALL.findall(source) + _INDIRECT_CALL.findall(source)}


def commands(role: Role) -> list[str]:
    """The commands ``role`` may run, sorted (``CONTAINER|SUBCOMMAND`` for a subcommand)."""
    found = set(_COMMON) | set(_DIRECT[role])
    for name in SCRIPTS[role]:
        found |= script_commands(name)
    return sorted(found)


def _glob_literal(text: str) -> str:
    """``text`` as a Redis glob pattern that matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def acl_rules(role: Role, keys: Keys) -> list[str]:
    """The ``ACL SETUSER`` rules of ``role`` for namespace ``keys`` (no password, no on/off)."""
    if role is Role.ADMIN:
        return ["allkeys", "allchannels", "+@all"]
    own = _glob_literal(keys.prefix) + "*"
    patterns = [own] + ([RQ_PATTERN] if role is Role.WEBHOOKS else [])
    rules = ["resetkeys", "resetchannels", "-@all"]
    rules += [f"~{pattern}" for pattern in patterns] + [f"&{pattern}" for pattern in patterns]
    rules += [f"+{command.lower()}" for command in commands(role)]
    return rules


def users(keys: Keys) -> dict[str, list[str]]:
    """Every role's rules, by user name."""
    return {role.value: acl_rules(role, keys) for role in Role}
