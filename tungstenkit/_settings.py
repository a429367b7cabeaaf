"""The one typed settings object: built from the environment at an entry point, passed down.

Every environment variable the product reads is named here; code below the
entry points never reads ``os.environ``. ``Settings`` is a pydantic-settings model: the
environment is read by its ``EnvSettingsSource`` and each value is converted by pydantic
for its field's type, so a new setting is one annotated line (and a check in
``_check`` where its value has bounds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from tungstenkit._errors import ConfigError
from tungstenkit._fetch import Allowlist

ENV_PREFIX = "TUNGSTEN_"
ENV_HOME = "TUNGSTEN_HOME"
ENV_REDIS_URL = "TUNGSTEN_REDIS_URL"
#: The conventional name, accepted as well (DESIGN §4).
ENV_REDIS_URL_PLAIN = "REDIS_URL"
#: Docker's folder of ``config.json``, read for registry credentials when
#: ``TUNGSTEN_DOCKER_CONFIG`` does not name the file.
ENV_DOCKER_CONFIG_DIR = "DOCKER_CONFIG"
#: Values of ``output_files``: inline data URIs (the default, as the seed shows) or links.
OUTPUT_FILE_MODES = ("data_uri", "url")
#: Values of ``log_format``.
LOG_FORMATS = ("text", "json")
#: How a switch (a ``bool`` setting) is written.
_TRUE = ("on", "true", "1", "yes")
_FALSE = ("off", "false", "0", "no")
#: Values of ``redis_maxmemory``: a percentage (1-100) or a size as Redis writes it.
_MAXMEMORY = re.compile(r"(100|[1-9][0-9]?)%|[0-9]+(b|k|kb|m|mb|g|gb)?")


@dataclass(frozen=True)
class RedisTLS:
    """The files of TLS with Redis (``rediss://``); None: the default (the system's CAs, no
    client certificate)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __bool__(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def files(self) -> dict[str, Path]:
        """The files given, by the environment variable that gave each."""
        named = {"CA_FILE": self.ca_file, "CERT_FILE": self.cert_file, "KEY_FILE": self.key_file}
        return {f"{ENV_PREFIX}REDIS_{name}": path for name, path in named.items() if path is not None}

    def settings_named(self) -> str:
        """The settings that gave these files, for messages."""
        return ", ".join(self.files())


class Settings(BaseSettings):
    """Runtime settings shared by the CLI, the API and the workers.

    Each field ``x`` can be set with the environment variable ``TUNGSTEN_X``
    (``from_env``); ``Settings(...)`` itself reads no environment, only its arguments.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid")

    #: Local model store and embedded Redis data (``$TUNGSTEN_HOME``).
    home: Path = Field(default_factory=lambda: Path("~/.tungsten").expanduser())
    #: Redis to use; None means ``tungsten serve`` starts its own.
    redis_url: str | None = None
    #: Key prefix separating models that share one Redis; default: the model's name.
    namespace: str | None = None
    #: Seconds a finished prediction stays readable before GET answers 404.
    result_ttl_s: int = 3600
    #: Events (partial outputs, progress, logs) kept per prediction for replay; the oldest
    #: are dropped past it (about: Redis trims whole blocks).
    max_events: int = 1000
    #: Bytes of a prediction's logs that ``GET`` shows: the last ones, with a marker in
    #: front when earlier ones were dropped.
    max_log_bytes: int = 64 * 1024
    #: Largest request body the API reads (413 above it).
    max_body_bytes: int = 100 * 1024 * 1024
    #: Largest list of inputs in one request (422 above it).
    max_inputs_per_request: int = 1024
    #: Inputs waiting or running across the queue before POST answers 429.
    max_queued_inputs: int = 100_000
    #: Replicas that must hold an accepted prediction before ``POST`` answers (Redis
    #: ``WAIT``): a failover of the primary then cannot lose it. 0: answer once the
    #: primary has it (replication is asynchronous).
    redis_wait_replicas: int = 0
    #: Seconds ``POST`` waits for those replicas; past it the prediction is canceled and
    #: ``POST`` answers 503.
    redis_wait_timeout_s: float = 1.0
    #: Longest a worker holds a partial batch waiting for more inputs (0: never).
    batch_wait_ms: float = 0.0
    #: Upper bound of ``GET /predictions/{id}?wait=``.
    max_wait_s: float = 60.0
    #: How long ``POST /predict`` waits for the result.
    sync_timeout_s: float = 600.0
    #: Longest an event stream stays open (0: until ``completed``); the client then
    #: reconnects with Last-Event-ID and misses nothing. Proxies that cut long requests
    #: do the same; this lets the server choose when.
    max_stream_s: float = 0.0
    #: ``POST /predict`` cancels its prediction when the client disconnects before it
    #: ended (unless the request carried an Idempotency-Key: its retry would find it canceled).
    cancel_on_disconnect: bool = True
    #: Seconds ``setup()`` may take before the worker gives up.
    setup_timeout_s: float = 3600.0
    #: Seconds one batch may run before it fails with ``Timeout`` (0: no limit).
    prediction_timeout_s: float = 0.0
    #: Seconds a stopping worker may spend finishing its batch (and the API its requests).
    shutdown_grace_s: float = 30.0
    #: Seconds a stopping API answers 503 to new predictions before it closes its port.
    drain_s: float = 1.0
    #: Open connections per API process; past it a newcomer takes the place of the one that
    #: has waited longest for a request head, and requests in progress past it get 503 (0: no limit).
    max_connections: int = 2048
    #: Seconds a connection may take to send a request head, from when it opened or its
    #: previous response ended; then it is closed (408 if it had begun one).
    header_timeout_s: float = 10.0
    #: Largest request head (request line and headers), in bytes; 431 above it.
    max_header_bytes: int = 32 * 1024
    #: Seconds a request body may take before it must keep up with ``min_body_bytes_per_s``.
    body_timeout_s: float = 10.0
    #: Slowest average rate, from its head on, at which a body may arrive after
    #: ``body_timeout_s``; a slower client is disconnected (0: no minimum).
    min_body_bytes_per_s: int = 8 * 1024
    #: Request body bytes one API process holds at once, over all requests; a body that
    #: would pass it gets 503 with Retry-After (0: no limit). At least ``max_body_bytes``.
    max_buffered_bytes: int = 256 * 1024 * 1024
    #: Require an API key (``Authorization: Bearer``) on every prediction route; keys are
    #: managed with ``tungsten keys``. Off: anyone who reaches the API may use it.
    api_keys: bool = False
    #: With ``api_keys``, ``GET /metrics`` also needs a key, with the ``admin`` scope.
    metrics_require_key: bool = False
    #: Web origins (``https://app.example.com``, comma-separated) whose pages may call the API
    #: from a browser (CORS); empty: none.
    cors_origins: str = ""
    #: fsync policy of the embedded Redis's append-only file: always, everysec or no.
    #: ``always``: with ``everysec`` Redis answers before writing to its file while an fsync
    #: is still running (up to 2 s, on a busy disk), so even a crash of the Redis process
    #: can lose predictions it had accepted; the soak suite saw it.
    redis_appendfsync: str = "always"
    #: Memory the embedded Redis may use: a share of this machine's memory (``25%``), a
    #: size (``512mb``, ``4gb``), or ``0`` for no limit. Past it Redis refuses writes
    #: (``noeviction``: evicting keys would lose predictions).
    redis_maxmemory: str = "25%"
    #: Seconds a starting worker or server keeps trying to reach Redis.
    redis_connect_timeout_s: float = 20.0
    #: CA certificates (PEM) to verify a ``rediss://`` Redis's certificate with, instead of
    #: the system's.
    redis_ca_file: Path | None = None
    #: Client certificate (PEM) for a ``rediss://`` Redis that asks for one; its key in
    #: ``redis_key_file``, or in the same file.
    redis_cert_file: Path | None = None
    redis_key_file: Path | None = None
    #: Seconds between worker heartbeats.
    heartbeat_interval_s: float = 1.0
    #: Seconds a worker may stay silent before it is presumed dead and live workers take
    #: over its inputs. Long enough to outlast a stall (a long GC, a C call holding the
    #: GIL, a paused VM); a worker that ``tungsten serve`` sees exit is released at once.
    heartbeat_ttl_s: float = 30.0
    #: Resident memory one worker may use, in MB (0: no bound). Past it the running batch's
    #: predictions fail with ``MemoryLimitExceeded`` and the worker is replaced.
    worker_max_memory_mb: int = 0
    #: Times an input may be running when its worker dies before its prediction fails.
    max_input_crashes: int = 3
    #: Largest file input, decoded: inline (413 above it) or downloaded from a URL.
    max_file_bytes: int = 100 * 1024 * 1024
    #: Largest image input in pixels; more is refused as a likely decompression bomb
    #: (40 megapixels; see ``tungstenkit._media.DEFAULT_MAX_IMAGE_PIXELS``).
    max_image_pixels: int = 40_000_000
    #: Hosts and networks URL inputs and webhooks may reach although they are not public:
    #: CIDRs, addresses and host names (``*.corp.example`` for subdomains), comma-separated,
    #: each with ``:PORT``, ``:LOW-HIGH`` or ``:*`` (``[v6]:PORT``); without one, an entry
    #: opens only the URL scheme's port (80 or 443).
    url_allowlist: str = ""
    #: Seconds to connect to a URL input's server.
    url_connect_timeout_s: float = 5.0
    #: Seconds a URL input's server may stay silent mid-download.
    url_read_timeout_s: float = 30.0
    #: Seconds one URL input's whole download may take.
    url_timeout_s: float = 120.0
    #: Redirects followed per URL input (each one checked like the first URL).
    url_max_redirects: int = 5
    #: How output files reach clients: ``data_uri`` inline, or ``url`` (``GET /files/{name}``).
    output_files: str = "data_uri"
    #: The API's public base URL, for output file links (empty: links are relative, ``/files/...``).
    public_url: str = ""
    #: Secret that signs webhook deliveries (HMAC-SHA256). Empty: one is generated per
    #: namespace and kept in Redis; ``tungsten status --webhook-secret`` prints it.
    webhook_secret: str = Field(default="", repr=False)
    #: Seconds one webhook delivery may take to connect, send and be answered.
    webhook_timeout_s: float = 10.0
    #: Times a failed webhook delivery is tried again.
    webhook_retries: int = 6
    #: Seconds before the first retry of a webhook delivery; each later wait is 4 times longer.
    webhook_backoff_s: int = 2
    #: Webhook delivery processes (RQ workers) that ``tungsten serve`` runs (0: none).
    webhook_workers: int = 2
    #: Deliveries one webhook process makes at once (each on a thread of its own).
    webhook_concurrency: int = 8
    #: Deliveries one webhook process makes at once to one receiver (host and port); the
    #: others to that receiver wait their turn without holding a thread.
    webhook_host_concurrency: int = 2
    #: Log lines as ``text`` or as ``json`` objects, one per line.
    log_format: str = "text"
    #: Login for OCI registries (push, pull); empty: the Docker config's, if any.
    registry_username: str = ""
    registry_password: str = Field(default="", repr=False)
    #: Docker's client config, whose ``auths``, ``credHelpers`` and ``credsStore`` give
    #: registry credentials (default ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``).
    docker_config: Path = Field(default_factory=lambda: Path("~/.docker/config.json").expanduser())
    #: CA certificates (PEM) to verify registries' TLS with, instead of the system's.
    registry_ca_file: Path | None = None
    #: Seconds to connect to a registry, and that it may stay silent.
    registry_timeout_s: float = 30.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the arguments: the environment is read by ``from_env`` at an entry point,
        # from the mapping it is given (tests and child processes pass their own).
        return (init_settings,)

    @field_validator("*", mode="before")
    @classmethod
    def _on_or_off(cls, value: Any, info: ValidationInfo) -> Any:
        """Switches read ``on``/``off`` (``true``, ``1``, ``yes`` / ``false``, ``0``, ``no``)."""
        if (
            not isinstance(value, str)
            or info.field_name is None
            or cls.model_fields[info.field_name].annotation is not bool
        ):
            return value
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError("expected on or off")
        return word in _TRUE

    @field_validator("*")
    @classmethod
    def _expand_home(cls, value: Any) -> Any:
        return value.expanduser() if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        """Values of the right type that cannot work (``ConfigError``, which pydantic passes on)."""
        if self.output_files not in OUTPUT_FILE_MODES:
            raise ConfigError(
                f"{ENV_PREFIX}OUTPUT_FILES={self.output_files!r}: expected one of {', '.join(OUTPUT_FILE_MODES)}"
            )
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"{ENV_PREFIX}PUBLIC_URL={self.public_url!r} must start with http:// or https://")
        for name in ("max_file_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.redis_wait_replicas < 0:
            raise ConfigError(f"{ENV_PREFIX}REDIS_WAIT_REPLICAS must be 0 or more")
        if not 0 < self.redis_wait_timeout_s <= 60:
            raise ConfigError(f"{ENV_PREFIX}REDIS_WAIT_TIMEOUT_S must be more than 0 and at most 60")
        if self.url_max_redirects < 0:
            raise ConfigError(f"{ENV_PREFIX}URL_MAX_REDIRECTS must be 0 or more")
        for name in ("webhook_retries", "webhook_backoff_s", "webhook_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be 0 or more")
        for name in ("webhook_concurrency", "webhook_host_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be at least 1")
        if not self.webhook_timeout_s > 0:
            raise ConfigError(f"{ENV_PREFIX}WEBHOOK_TIMEOUT_S must be positive")
        if not self.heartbeat_interval_s > 0:
            raise ConfigError(f"{ENV_PREFIX}HEARTBEAT_INTERVAL_S must be positive")
        if not self.heartbeat_ttl_s >= 2 * self.heartbeat_interval_s:
            raise ConfigError(
                f"{ENV_PREFIX}HEARTBEAT_TTL_S ({self.heartbeat_ttl_s:g}) must be at least twice "
                f"{ENV_PREFIX}HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g})"
            )
        if not _MAXMEMORY.fullmatch(self.redis_maxmemory.strip().lower()):
            raise ConfigError(
                f"{ENV_PREFIX}REDIS_MAXMEMORY={self.redis_maxmemory!r}: expected a share of memory (25%), "
                "a size (512mb, 4gb) or 0"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"{ENV_PREFIX}LOG_FORMAT={self.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
        Allowlist.parse(self.url_allowlist)  # ConfigError for an entry that is no network or host
        if not self.registry_timeout_s > 0:
            raise ConfigError(f"{ENV_PREFIX}REGISTRY_TIMEOUT_S must be positive")
        if bool(self.registry_username) != bool(self.registry_password):
            raise ConfigError(f"Set both {ENV_PREFIX}REGISTRY_USERNAME and {ENV_PREFIX}REGISTRY_PASSWORD, or neither")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.max_header_bytes < 1024:
            raise ConfigError(f"{ENV_PREFIX}MAX_HEADER_BYTES must be at least 1024")
        if self.max_events < 1 or self.max_log_bytes < 1024:
            raise ConfigError(f"{ENV_PREFIX}MAX_EVENTS must be at least 1 and {ENV_PREFIX}MAX_LOG_BYTES at least 1024")
        for name in ("max_connections", "min_body_bytes_per_s", "max_buffered_bytes", "worker_max_memory_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be 0 or more")
        if self.max_buffered_bytes and self.max_buffered_bytes < self.max_body_bytes:
            raise ConfigError(
                f"{ENV_PREFIX}MAX_BUFFERED_BYTES ({self.max_buffered_bytes}) must be at least "
                f"{ENV_PREFIX}MAX_BODY_BYTES ({self.max_body_bytes}), or no body that large could be read"
            )
        cors_origins(self.cors_origins)  # ConfigError for an entry that is no origin
        if self.redis_key_file and not self.redis_cert_file:
            raise ConfigError(
                f"{ENV_PREFIX}REDIS_KEY_FILE needs {ENV_PREFIX}REDIS_CERT_FILE (the certificate of that key)"
            )
        return self

    @property
    def redis_tls(self) -> RedisTLS:
        """The TLS files of a ``rediss://`` Redis."""
        return RedisTLS(self.redis_ca_file, self.redis_cert_file, self.redis_key_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings that ``environ`` gives (``TUNGSTEN_*``; unset or empty: the default);
        ``ConfigError`` naming the variable for a value that is unusable."""
        environ = _with_conventional_names(environ)
        values = _Environ(cls, environ)()
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _config_error(cls, exc, values) from None

    def replace(self, **changes: object) -> Settings:
        """These settings with ``changes`` (None: unchanged), checked again."""
        kept = {k: v for k, v in changes.items() if v is not None}
        return type(self)(**{**self.model_dump(), **kept})

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                env[ENV_PREFIX + name.upper()] = str(value)
        return env


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping given to ``from_env``
    rather than the process's own environment."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As pydantic-settings reads ``os.environ`` (not case-sensitive; empty is unset).
        return {name.lower(): value for name, value in self._environ.items() if value or not self.env_ignore_empty}


def _with_conventional_names(environ: Mapping[str, str]) -> Mapping[str, str]:
    """``REDIS_URL`` stands for ``TUNGSTEN_REDIS_URL``, and ``$DOCKER_CONFIG/config.json``
    for ``TUNGSTEN_DOCKER_CONFIG``, where those are unset (or empty)."""
    filled = dict(environ)
    if not environ.get(ENV_REDIS_URL) and environ.get(ENV_REDIS_URL_PLAIN):
        filled[ENV_REDIS_URL] = environ[ENV_REDIS_URL_PLAIN]
    if not environ.get(f"{ENV_PREFIX}DOCKER_CONFIG") and environ.get(ENV_DOCKER_CONFIG_DIR):
        filled[f"{ENV_PREFIX}DOCKER_CONFIG"] = str(Path(environ[ENV_DOCKER_CONFIG_DIR]) / "config.json")
    return filled


def _config_error(settings_cls: type[Settings], exc: ValidationError, values: Mapping[str, Any]) -> ConfigError:
    """One line for the first value of the wrong type: the variable, its value, what it must be."""
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    field = settings_cls.model_fields.get(name)
    variable, raw = f"{ENV_PREFIX}{name.upper()}", values.get(name, error["input"])
    if field is None:
        return ConfigError(f"{variable}: {error['msg']}")
    if field.annotation is bool:
        return ConfigError(f"{variable}={raw!r}: expected on or off")
    kind = getattr(field.annotation, "__name__", str(field.annotation))
    return ConfigError(f"{variable}={raw!r} is not a valid {kind}")


def cors_origins(value: str) -> tuple[str, ...]:
    """The origins of ``cors_origins``: each ``scheme://host[:port]``, never ``*``."""
    origins = tuple(entry.strip().rstrip("/") for entry in value.split(",") if entry.strip())
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if origin == "*" or "*" in origin:
            raise ConfigError(f"{ENV_PREFIX}CORS_ORIGINS: list the origins explicitly, not {origin!r}")
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise ConfigError(f"{ENV_PREFIX}CORS_ORIGINS: {origin!r} is not an origin such as https://app.example.com")
    return origins
