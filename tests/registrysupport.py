"""A real OCI registry for the tests: Debian's ``docker-registry`` (the CNCF distribution).

Each ``Registry`` runs one on a free loopback port, with its storage in a folder the test
can read and damage, optionally with TLS (a certificate made here) and htpasswd logins.
Its access log counts what clients fetched.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import wait_for
from tungstenkit._redis_server import free_port

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
MISSING = (
    None
    if Path(BINARY).is_file()
    else (
        "docker-registry is not installed (Debian: apt-get install docker-registry); the registry tests need a real one"
    )
)


class Registry:
    def __init__(self, folder: Path, *, tls: bool = False, users: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.storage = folder / "storage"
        self.port = free_port()
        self.host = f"localhost:{self.port}" if tls else f"127.0.0.1:{self.port}"
        self.ca_file: Path | None = None
        self.log_path = folder / "registry.log"
        lines = [
            "version: 0.1",
            "log: {level: info}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if tls:
            self.ca_file, key = _certificate(folder)
            lines.append(f"  tls: {{certificate: {self.ca_file}, key: {key}}}")
        if users:
            htpasswd = folder / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                    for user, pw in users.items()
                )
            )
            lines.append(f"auth: {{htpasswd: {{realm: tests, path: {htpasswd}}}}}")
        self.config = folder / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([BINARY, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        scheme = "https" if self.ca_file else "http"
        verify = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited:\n{self.log()}")
            try:
                httpx.get(f"{scheme}://{self.host}/v2/", verify=verify, timeout=2)
                return True
            except httpx.TransportError:
                return False

        try:
            wait_for(answers, 30, interval=0.05, what="docker-registry to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self, method: str, kind: str) -> int:
        """How many ``METHOD /v2/.../{blobs|manifests}/...`` requests the access log holds."""
        pattern = re.compile(rf'"{method} /v2/[^ ]+/{kind}/')
        return sum(1 for line in self.log().splitlines() if pattern.search(line))

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (the filesystem driver's layout)."""
        hex_digest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (the CA file is the certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
