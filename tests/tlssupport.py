"""TLS for the tests: a CA, server and client certificates made with `openssl`, and a
redis-server that speaks only TLS."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support import pings, wait_for
from tungstenkit._redis_server import find_redis_server, free_port


@dataclass(frozen=True)
class Certificates:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def other_ca(self) -> Path:
        """A CA that signed neither the server's nor the client's certificate."""
        return self.folder / "other-ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _key_and_request(certs: Certificates, name: str, subject: str) -> Path:
    request = certs.folder / f"{name}.csr"
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(certs.key(name)),
        "-out",
        str(request),
        "-subj",
        subject,
    )
    return request


def make_certificates(folder: Path) -> Certificates:
    """A CA (and another one), a server certificate for 127.0.0.1 and localhost, and a
    client certificate ``client``, all signed by the CA."""
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certificates(folder)
    for name in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(certs.key(name)),
            "-out",
            str(certs.cert(name)),
            "-days",
            "2",
            "-subj",
            f"/CN=Test {name}",
        )
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", str(extensions)]), ("client", [])):
        request = _key_and_request(certs, name, f"/CN=tungsten {name}")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(certs.ca),
            "-CAkey",
            str(certs.key("ca")),
            "-CAcreateserial",
            "-out",
            str(certs.cert(name)),
            "-days",
            "2",
            *extra,
        )
    return certs


@dataclass(frozen=True)
class TlsRedis:
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0"


@contextmanager
def tls_redis(certs: Certificates, folder: Path, auth_clients: str = "yes") -> Iterator[TlsRedis]:
    """A redis-server on loopback that speaks only TLS; ``auth_clients``: whether it asks
    for a client certificate (``yes``, ``optional``, ``no``)."""
    server = TlsRedis(free_port(), secrets.token_hex(16))
    folder.mkdir(parents=True, exist_ok=True)
    config = [
        "port 0",
        "bind 127.0.0.1",
        f"tls-port {server.port}",
        f"tls-cert-file {certs.cert('server')}",
        f"tls-key-file {certs.key('server')}",
        f"tls-ca-cert-file {certs.ca}",
        f"tls-auth-clients {auth_clients}",
        f"requirepass {server.password}",
        'save ""',
        "appendonly no",
        f"dir {folder}",
        f"logfile {folder / 'redis.log'}",
    ]
    process = subprocess.Popen([find_redis_server(), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stdin is not None
    process.stdin.write("\n".join(config).encode() + b"\n")
    process.stdin.close()

    def answers() -> bool:
        assert process.poll() is None, (folder / "redis.log").read_text()
        return pings(
            redis.Redis.from_url(
                server.url,
                ssl_ca_certs=str(certs.ca),
                ssl_certfile=str(certs.cert("client")),
                ssl_keyfile=str(certs.key("client")),
            )
        )

    try:
        wait_for(answers, 15, what="the TLS redis-server")
        yield server
    finally:
        process.terminate()
        process.wait(10)
