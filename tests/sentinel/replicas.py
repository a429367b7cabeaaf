"""A replicated Redis watched by Sentinel, from real processes on loopback ports.

``SentinelSet`` starts a primary, ``replicas`` replicas of it and three
``redis-server --sentinel`` processes that agree (quorum 2) on a failover one second
after the primary stops answering. Everything runs from a folder of its own and
``stop()`` kills every process it started (each also dies with its parent).
Shared by ``tests/sentinel/`` and ``bench/sentinel_failover.py``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support import pings, wait_for
from tests.tlssupport import Certificates
from tungstenkit._process import die_with_parent
from tungstenkit._redis_server import find_redis_server, free_port

SERVICE = "tungsten-test"
#: A primary silent this long is down for a Sentinel (then 2 of 3 agree and fail over).
DOWN_AFTER_MS = 1000
#: How long a failover may take before another Sentinel tries again.
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class _Process:
    name: str
    port: int
    process: subprocess.Popen[bytes]


@dataclass
class SentinelSet:
    folder: Path
    replicas: int = 1
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    #: Give the Sentinels a password of their own (``requirepass`` on them too).
    sentinel_password: str | None = None
    #: Speak only TLS (every node and Sentinel, with these certificates, asking clients
    #: for theirs); clients then use ``rediss+sentinel://``.
    tls: Certificates | None = None
    _nodes: dict[int, _Process] = field(default_factory=dict)
    _sentinels: list[_Process] = field(default_factory=list)

    # -- addresses -------------------------------------------------------------------
    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self._sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://:{self.password}@{hosts}/{SERVICE}/0{query}"

    def _tls_kwargs(self) -> dict[str, object]:
        if self.tls is None:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.tls.ca),
            "ssl_certfile": str(self.tls.cert("client")),
            "ssl_keyfile": str(self.tls.key("client")),
        }

    def _tls_lines(self, port: int) -> list[str]:
        if self.tls is None:
            return [f"port {port}"]
        return [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {self.tls.cert('server')}",
            f"tls-key-file {self.tls.key('server')}",
            f"tls-ca-cert-file {self.tls.ca}",
            "tls-auth-clients yes",
            # Replicas, and Sentinels, reach the other processes over TLS too.
            "tls-replication yes",
        ]

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
            **self._tls_kwargs(),  # type: ignore[arg-type]
        )

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=self.sentinel_password,
            socket_timeout=2,
            socket_connect_timeout=2,
            **self._tls_kwargs(),  # type: ignore[arg-type]
        )

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinels that answer agree on (None if they do not)."""
        seen = set()
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if address:
                seen.add(int(address[1]))
        return seen.pop() if len(seen) == 1 else None

    def node_ports(self) -> list[int]:
        return list(self._nodes)

    def running(self, port: int) -> bool:
        node = self._nodes.get(port)
        return node is not None and node.process.poll() is None

    # -- life ------------------------------------------------------------------------
    def start(self) -> SentinelSet:
        self.folder.mkdir(parents=True, exist_ok=True)
        primary = free_port()
        self._start_node(primary, None)
        for _ in range(self.replicas):
            self._start_node(free_port(), primary)
        for _ in range(3):
            self._start_sentinel(primary)
        self.wait_settled(primary)
        return self

    def wait_settled(self, primary: int, timeout: float = 30.0) -> None:
        """Until every replica streams from ``primary`` and every Sentinel knows the others
        and the replicas (before that, a failover could not happen)."""

        def settled() -> bool:
            for port in self._nodes:
                if port == primary or not self.running(port):
                    continue
                client = self.node_client(port)
                try:
                    info = client.info("replication")
                except redis.RedisError:
                    return False
                finally:
                    client.close()
                if info.get("master_port") != primary or info.get("master_link_status") != "up":
                    return False
            live_replicas = sum(1 for port in self._nodes if port != primary and self.running(port))
            for port in self.sentinel_ports:
                client = self.sentinel_client(port)
                try:
                    state = client.sentinel_master(SERVICE)
                except redis.RedisError:
                    return False
                finally:
                    client.close()
                if int(state["port"]) != primary or state["num-other-sentinels"] < 2:
                    return False
                if state["num-slaves"] < live_replicas:
                    return False
            return True

        wait_for(settled, timeout, interval=0.05, what="the replicas and Sentinels to settle")

    def _spawn(self, name: str, config: str, *extra: str) -> subprocess.Popen[bytes]:
        path = self.folder / f"{name}.conf"
        path.write_text(config)
        return subprocess.Popen(
            [find_redis_server(), str(path), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )

    def _start_node(self, port: int, primary: int | None) -> None:
        lines = [
            "bind 127.0.0.1",
            *self._tls_lines(port),
            f"dir {self.folder}",
            f"logfile {self.folder / f'redis-{port}.log'}",
            f"dbfilename dump-{port}.rdb",
            'save ""',
            "appendonly no",
            f"requirepass {self.password}",
            f"masterauth {self.password}",
        ]
        if primary is not None:
            lines.append(f"replicaof 127.0.0.1 {primary}")
        process = self._spawn(f"redis-{port}", "\n".join(lines) + "\n")
        self._nodes[port] = _Process(f"redis-{port}", port, process)
        wait_for(lambda: self._answers(port), 15, interval=0.05, what=f"redis-server on {port}")

    def _start_sentinel(self, primary: int) -> None:
        port = free_port()
        lines = [
            "bind 127.0.0.1",
            *self._tls_lines(port),
            f"dir {self.folder}",
            f"logfile {self.folder / f'sentinel-{port}.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2",
            f"sentinel auth-pass {SERVICE} {self.password}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        process = self._spawn(f"sentinel-{port}", "\n".join(lines) + "\n", "--sentinel")
        self._sentinels.append(_Process(f"sentinel-{port}", port, process))

        wait_for(lambda: pings(self.sentinel_client(port)), 15, interval=0.05, what=f"sentinel on {port}")

    def _answers(self, port: int) -> bool:
        client = self.node_client(port)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """SIGKILL the Redis on ``port`` (as a machine dying would stop it)."""
        node = self._nodes[port]
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again, empty; the Sentinels make it a replica of the primary."""
        current = self.primary_port()
        assert current is not None and current != port
        self._start_node(port, current)

    def kill_primary(self) -> int:
        port = self.primary_port()
        assert port is not None
        self.kill(port)
        return port

    def move_primary_by_hand(self) -> int:
        """Promote a replica and demote the primary with ``REPLICAOF``, as an operator
        might, and point the Sentinels at the new primary; returns its port.

        Unlike a Sentinel failover (which disconnects the old primary's clients), this
        leaves them connected: their next write meets ``READONLY``."""
        old = self.primary_port()
        new = next(port for port in self._nodes if port != old and self.running(port))
        self._command(new, "REPLICAOF", "NO", "ONE")
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            try:
                client.execute_command("SENTINEL", "REMOVE", SERVICE)
                client.execute_command("SENTINEL", "MONITOR", SERVICE, "127.0.0.1", new, 2)
                client.execute_command(
                    "SENTINEL",
                    "SET",
                    SERVICE,
                    "auth-pass",
                    self.password,
                    "down-after-milliseconds",
                    DOWN_AFTER_MS,
                    "failover-timeout",
                    FAILOVER_TIMEOUT_MS,
                )
            finally:
                client.close()
        self._command(old, "REPLICAOF", "127.0.0.1", new)
        return new

    def _command(self, port: int, *args: object) -> object:
        client = self.node_client(port)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def wait_new_primary(self, old: int, timeout: float = 30.0) -> int:
        def promoted() -> int | None:
            port = self.primary_port()
            if port is None or port == old or not self.running(port):
                return None
            client = self.node_client(port)
            try:
                role = client.info("replication").get("role")
            except redis.RedisError:
                return None
            finally:
                client.close()
            return port if role == "master" else None

        return int(wait_for(promoted, timeout, interval=0.05, what="a new primary"))

    def stop(self) -> None:
        for node in [*self._sentinels, *self._nodes.values()]:
            if node.process.poll() is None:
                node.process.kill()
            node.process.wait(10)
        self._sentinels.clear()
        self._nodes.clear()
