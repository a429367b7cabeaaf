"""Turning a Redis URL into clients: the one place that does, for every process.

Two kinds of address:

- one Redis, in redis-py's forms: ``redis://[[user]:password@]host[:port][/db]``,
  ``rediss://...`` (TLS), ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``;
- a primary watched by Redis Sentinel, whose clients follow a failover:
  ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
  with optional ``?sentinel_username=...&sentinel_password=...`` when the Sentinels
  themselves require a password. The user and password are those of the primary and
  its replicas; a port defaults to 26379, the database to 0, an IPv6 address goes in
  brackets (``[::1]:26379``). ``rediss+sentinel://`` speaks TLS to the Sentinels and to
  the primary.

``rediss://`` and ``rediss+sentinel://`` take the TLS files of the settings
(``TUNGSTEN_REDIS_CA_FILE``, ``_CERT_FILE``, ``_KEY_FILE``: ``RedisTLS``).

A Sentinel client asks the Sentinels for the primary's address whenever it opens a
connection. When the primary dies its connections fail (``ConnectionError``); when it
is demoted to a replica, redis-py turns its ``READONLY`` replies into a
``ConnectionError`` too and drops the connection. Either way the caller's retry opens a
new connection, to whichever primary the Sentinels then name, and while they name none
it gets ``MasterNotFoundError`` (a ``ConnectionError``): every caller already treats
these as "Redis unreachable, retry".
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.retry import Retry

from tungstenkit._errors import ConfigError, RedisUnavailable
from tungstenkit._queue._keys import CONNECTION_ERRORS
from tungstenkit._settings import ENV_PREFIX, RedisTLS

#: The scheme of a Sentinel-watched primary.
SENTINEL_SCHEME = "redis+sentinel"
#: The same, with TLS to the Sentinels and to the primary.
TLS_SENTINEL_SCHEME = "rediss+sentinel"
#: The schemes of a Sentinel-watched primary.
SENTINEL_SCHEMES = (SENTINEL_SCHEME, TLS_SENTINEL_SCHEME)
#: The schemes that take the TLS settings (``RedisTLS``).
TLS_SCHEMES = ("rediss", TLS_SENTINEL_SCHEME)
#: Sentinel's own default port.
DEFAULT_SENTINEL_PORT = 26379
#: The schemes redis-py reads itself (one Redis).
DIRECT_SCHEMES = ("redis", "rediss", "unix")
#: Seconds to connect to, and wait for, one Sentinel before asking the next: they answer
#: from memory, so a slow one is a dead one.
SENTINEL_TIMEOUT_S = 2.0
#: How often an asyncio client tries a call again, on a fresh connection, after its
#: connection dropped or its primary turned replica: within about half a second, so a
#: request that met a stale connection after a failover still succeeds. (Blocking
#: clients do not: the worker threads that own them retry with their own backoff.)
ASYNC_RETRIES = 3
#: Query options of a Sentinel URL (the Sentinels' own credentials).
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelAddress:
    """A ``redis+sentinel://`` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    #: ``rediss+sentinel://``: TLS to the Sentinels and to the primary.
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """Parse ``url``; ``ConfigError`` saying what is wrong with it."""
        scheme, sep, rest = url.partition("://")
        if sep == "" or scheme.lower() not in SENTINEL_SCHEMES:
            raise ConfigError(f"Not a {SENTINEL_SCHEME}:// URL: {redacted(url)}")
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if not at:
            userinfo, hosts = "", netloc
        username, password = _credentials(userinfo)
        sentinels = tuple(_host_port(part, url) for part in hosts.split(","))
        parts = path.split("/")
        if not parts[0] or len(parts) > 2:
            raise ConfigError(
                f"Redis Sentinel URL {redacted(url)}: expected {SENTINEL_SCHEME}://host:port[,host:port...]/service[/db]"
            )
        service = unquote(parts[0])
        db = 0
        if len(parts) == 2 and parts[1]:
            if not parts[1].isdigit():
                raise ConfigError(
                    f"Redis Sentinel URL {redacted(url)}: the database must be a number, not {parts[1]!r}"
                )
            db = int(parts[1])
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
        if unknown:
            raise ConfigError(
                f"Redis Sentinel URL {redacted(url)}: unknown option {unknown[0]!r} "
                f"(known: {', '.join(_SENTINEL_OPTIONS)})"
            )
        return cls(
            sentinels=sentinels,
            service=service,
            db=db,
            username=username,
            password=password,
            sentinel_username=options.get("sentinel_username") or None,
            sentinel_password=options.get("sentinel_password") or None,
            tls=scheme.lower() == TLS_SENTINEL_SCHEME,
        )

    def sentinel_kwargs(self, tls: dict[str, Any] | None = None) -> dict[str, Any]:
        """How to talk to the Sentinels themselves (``tls``: ``tls_options``)."""
        kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            **self._ssl(tls),
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        return kwargs

    def primary_kwargs(self, tls: dict[str, Any] | None = None) -> dict[str, Any]:
        """How to talk to the primary, once the Sentinels named it (``tls``: ``tls_options``)."""
        return {"db": self.db, "username": self.username, "password": self.password, **self._ssl(tls)}

    def _ssl(self, tls: dict[str, Any] | None) -> dict[str, Any]:
        return {"ssl": True, **(tls or {})} if self.tls else {}


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    if not colon:
        # redis-py reads "redis://secret@host" as a password too.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host_port(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ConfigError(f"Redis Sentinel URL {redacted(url)}: bad address {text!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError(f"Redis Sentinel URL {redacted(url)}: a Sentinel address is empty")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"Redis Sentinel URL {redacted(url)}: bad port {port_text!r}")
    return host, int(port_text)


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def check_url(url: str) -> None:
    """``ConfigError`` unless ``url`` is a Redis address this package can use."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        SentinelAddress.parse(url)
        return
    if scheme == "redis+cluster":
        raise ConfigError(
            "Redis Cluster (redis+cluster://) is not supported: every key of a model lives in one hash slot, so a "
            "cluster adds no capacity, and the webhook queue (RQ) cannot run on one; for a Redis that survives "
            f"losing its primary use Redis Sentinel ({SENTINEL_SCHEME}://)"
        )
    if scheme not in DIRECT_SCHEMES:
        raise ConfigError(
            f"Unsupported Redis URL {redacted(url)}: expected redis://, rediss://, unix://, {SENTINEL_SCHEME}:// "
            f"or {TLS_SENTINEL_SCHEME}://"
        )


def redacted(url: str) -> str:
    """A Redis URL without its passwords, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    # The user info ends at the last "@" before the path (``unix://:password@/path`` too).
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    shown = f"{scheme}://{netloc}{slash}{path}"
    if question:
        pairs = [(k, "***" if "password" in k.lower() else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        shown += "?" + urlencode(pairs, safe="*")
    return shown


def tls_options(url: str, tls: RedisTLS | None) -> dict[str, Any]:
    """redis-py's options for the TLS files ``tls``; ``ConfigError`` for a file that is not
    there, or for files given with a URL that is not ``rediss://`` or ``rediss+sentinel://``."""
    if not tls:
        return {}
    if url.partition("://")[0].lower() not in TLS_SCHEMES:
        raise ConfigError(
            f"{tls.settings_named()} is set, but the Redis URL {redacted(url)} is not rediss:// or "
            f"{TLS_SENTINEL_SCHEME}:// (TLS)"
        )
    for setting, path in tls.files().items():
        if not path.is_file():
            raise ConfigError(f"{setting}: no such file {path}")
    options = {"ssl_ca_certs": tls.ca_file, "ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    return {option: str(path) for option, path in options.items() if path is not None}


# -- clients -------------------------------------------------------------------------
def sync_client(
    url: str, *, socket_timeout: float | None, socket_connect_timeout: float, tls: RedisTLS | None = None
) -> redis.Redis:
    """A blocking client (its own connection pool) for the primary at ``url``."""
    check_url(url)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": 30,
    }
    files = tls_options(url, tls)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options, **files)
    address = SentinelAddress.parse(url)
    sentinel = redis.sentinel.Sentinel(address.sentinels, sentinel_kwargs=address.sentinel_kwargs(files))
    # ``ssl`` among the primary's options makes redis-py's pool open TLS connections.
    return cast(redis.Redis, sentinel.master_for(address.service, **options, **address.primary_kwargs(files)))


class _ResetOnClose(redis.asyncio.Connection):
    """A TCP connection that is reset when it is dropped, not closed: what it had sent and
    Redis had not received is discarded instead of delivered later.

    The API gives up on a call when Redis stays silent past its timeout (a partition, say),
    and tells the client 503. A graceful close would leave the request in the socket's send
    buffer, and TCP would deliver it when the network came back: a ``POST`` answered 503
    would be queued after all, under an id its client never saw, and run."""

    async def _connect(self) -> None:
        connect = cast(Callable[[], Awaitable[None]], super()._connect)  # untyped in redis-py
        await connect()
        sock = self._writer.transport.get_extra_info("socket") if self._writer is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _ApiConnection(_ResetOnClose):
    """The API's connections to a ``redis://`` Redis."""


class _PrimaryConnection(_ResetOnClose, redis.asyncio.sentinel.SentinelManagedConnection):
    """redis-py's asyncio Sentinel connection, asking the Sentinels again whenever it
    reconnects.

    When a call is retried, redis-py reopens the dropped connection from
    ``send_packed_command`` with the address it had (redis/redis-py#3874), so the retry
    went back to the old primary; ``connect()`` asks the Sentinels first."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            connect = cast(Callable[[], Awaitable[None]], self.connect)  # untyped in redis-py
            await connect()
        await super().send_packed_command(command, check_health)


class _PrimaryTLSConnection(_PrimaryConnection, redis.asyncio.sentinel.SentinelManagedSSLConnection):
    """The same over TLS (``rediss+sentinel://``)."""


def _primary_connection(address: SentinelAddress) -> type[_PrimaryConnection]:
    # redis-py picks its TLS connection class only when it picks the class itself.
    return _PrimaryTLSConnection if address.tls else _PrimaryConnection


class _BlockingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Sentinel's pool (connections to whichever primary the Sentinels name) that waits
    for a free connection, as the API's pool does, rather than failing at once."""


def async_client(
    url: str, *, max_connections: int, timeout_s: float, tls: RedisTLS | None = None
) -> redis.asyncio.Redis:
    """An asyncio client whose pool holds at most ``max_connections`` connections and
    waits up to ``timeout_s`` for a free one (and to open one).

    A call whose connection drops is tried again (``ASYNC_RETRIES``), so every call made
    through it must be safe to repeat (the submit script is). No per-socket read
    timeout: redis-py would wrap every send in a task for it, so the caller bounds each
    call as a whole instead; a TCP connection dropped then is reset (``_ResetOnClose``),
    so that a call given up on never reaches Redis later."""
    check_url(url)
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
        "retry": AsyncRetry(ExponentialWithJitterBackoff(cap=0.25, base=0.05), ASYNC_RETRIES),
    }
    files = tls_options(url, tls)
    if not is_sentinel_url(url):
        if url.startswith("redis://"):  # (unix:// and rediss:// keep their own connection classes)
            options["connection_class"] = _ApiConnection
        return redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(url, **options, **files)
        )
    address = SentinelAddress.parse(url)
    sentinel = redis.asyncio.sentinel.Sentinel(address.sentinels, sentinel_kwargs=address.sentinel_kwargs(files))
    return cast(
        redis.asyncio.Redis,
        sentinel.master_for(
            address.service,
            connection_pool_class=_BlockingSentinelPool,
            connection_class=_primary_connection(address),
            **options,
            **address.primary_kwargs(files),
        ),
    )


def async_subscriber(url: str, *, connect_timeout_s: float, tls: RedisTLS | None = None) -> redis.asyncio.Redis:
    """An asyncio client for pub/sub: no read timeout, since a subscription waits for
    messages as long as it takes."""
    check_url(url)
    files = tls_options(url, tls)
    if not is_sentinel_url(url):
        return redis.asyncio.Redis.from_url(url, socket_connect_timeout=connect_timeout_s, **files)
    address = SentinelAddress.parse(url)
    sentinel = redis.asyncio.sentinel.Sentinel(address.sentinels, sentinel_kwargs=address.sentinel_kwargs(files))
    return cast(
        redis.asyncio.Redis,
        sentinel.master_for(
            address.service,
            connection_class=_primary_connection(address),
            socket_connect_timeout=connect_timeout_s,
            **address.primary_kwargs(files),
        ),
    )


async def close_async(client: redis.asyncio.Redis) -> None:
    """Close ``client`` and, for a Sentinel client, its connections to the Sentinels."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, redis.asyncio.sentinel.Sentinel):
        await manager.aclose()


def close_sync(client: redis.Redis) -> None:
    """Close ``client`` and, for a Sentinel client, its connections to the Sentinels."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, redis.sentinel.Sentinel):
        manager.close()


def connect(url: str, timeout_s: float, tls: RedisTLS | None = None) -> redis.Redis:
    """A blocking client for ``url`` once its primary answers; ``RedisUnavailable`` after
    ``timeout_s`` (or at once if it refuses the password or TLS fails on a certificate),
    ``ConfigError`` for a bad URL or TLS file."""
    client = sync_client(url, socket_timeout=15, socket_connect_timeout=5, tls=tls)
    deadline = time.monotonic() + timeout_s

    def worth_another_try(error: Exception) -> bool:
        untrusted = isinstance(_ssl_error(error), ssl.SSLCertVerificationError)
        return not (untrusted or isinstance(error, redis.AuthenticationError)) and time.monotonic() < deadline

    # redis-py's Retry waits between the tries (0.1 s, doubling, at most 2 s); which
    # errors are worth another try, and for how long, is ours to say.
    tries = Retry(ExponentialBackoff(cap=2.0, base=0.05), -1, supported_errors=CONNECTION_ERRORS)
    try:
        tries.call_with_retry(client.ping, lambda error: None, is_retryable=worth_another_try)
    except redis.AuthenticationError as exc:
        close_sync(client)
        raise RedisUnavailable(f"Redis at {redacted(url)} refused the password: {exc}") from exc
    except CONNECTION_ERRORS as exc:
        tls_error = _ssl_error(exc)
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            # Trying again cannot make the certificate trusted.
            close_sync(client)
            raise RedisUnavailable(
                f"Redis at {redacted(url)} is not trusted: {tls_error.verify_message or tls_error.reason} "
                f"(a CA of its certificate goes in {ENV_PREFIX}REDIS_CA_FILE)"
            ) from exc
        close_sync(client)
        # Redis closes the TLS connection of a client whose certificate it refuses.
        hint = f" (does it want a client certificate? {ENV_PREFIX}REDIS_CERT_FILE)" if tls_error else ""
        raise RedisUnavailable(f"Cannot reach Redis at {redacted(url)}: {exc}{hint}") from exc
    return client


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (redis-py wraps it in a ``ConnectionError``), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
