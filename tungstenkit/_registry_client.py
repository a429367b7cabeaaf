"""Talking to one OCI registry repository: manifests and blobs, with TLS and logins.

The HTTP side (sessions, upload locations, the Basic and Bearer-token logins) is
``oras``'s ``Registry``; this module adds what a model store needs of it: a first
``GET /v2/`` that picks TLS or (for a loopback registry, or with ``insecure``) plain
HTTP and the login scheme, errors that say what went wrong in one line, timeouts, no
retry loop (oras's sleeps up to two minutes when a registry is down), and a check of
every byte it reads against its digest.

TLS is verified against the system's CAs, or instead those of ``registry_ca_file``. Plain HTTP is used
only for a registry on this machine that does not speak TLS, or when asked with
``insecure``, which also lets a remote registry be reached over plain HTTP.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import IO, Any

import oras.auth
import oras.provider
import requests

from tungstenkit._errors import DigestMismatch, RegistryError, RegistryUnreachable
from tungstenkit._oci import RegistryReference
from tungstenkit._registry_auth import Credentials, find_credentials
from tungstenkit._settings import Settings

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: oras's ``do_request`` without its retry decorator (which sleeps 3 s, 5 s ... 83 s).
_request_once = oras.provider.Registry.do_request.__wrapped__


class _Session(requests.Session):
    """A session whose every request has a timeout (requests has no default one) and our TLS check.

    ``verify`` is passed on each request because requests lets ``REQUESTS_CA_BUNDLE`` win
    over a session's own ``verify``.
    """

    def __init__(self, timeout_s: float, verify: bool | str) -> None:
        super().__init__()
        self._timeout_s = timeout_s
        self._verify = verify
        # Some registries set cookies as if talking to a browser: keep none (as oras does).
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout_s)
        if kwargs.get("verify") in (None, True):
            kwargs["verify"] = self._verify
        return super().request(*args, **kwargs)


class _Oras(oras.provider.Registry):
    """oras's client, one attempt per request, with a Basic login sent up front."""

    basic_header: str | None = None

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = dict(headers or {})
        if self.basic_header:
            # Up front, not after a 401: a streamed upload body can be sent only once.
            headers["Authorization"] = self.basic_header
        response = _request_once(self, url, method, data, headers, json, stream)
        token_auth = isinstance(self.auth, oras.auth.TokenAuth)
        if response.status_code == 401 and token_auth and self.auth.token and not hasattr(data, "read"):
            # The token held was granted for less (pull, not push): ask for one for this request.
            self.auth.token = None
            response = _request_once(self, url, method, data, dict(headers), json, stream)
        return response


class RegistryClient:
    """One repository of one registry; ``open`` before use (it checks the connection and login)."""

    def __init__(self, reference: RegistryReference, settings: Settings, *, insecure: bool = False) -> None:
        self.reference = reference
        self._settings = settings
        self._insecure = insecure
        self._scheme = "http" if insecure else "https"
        verify: bool | str = str(settings.registry_ca_file) if settings.registry_ca_file else True
        self._verify = verify
        self._oras: _Oras | None = None
        self._base = ""

    # -- connection ------------------------------------------------------------------
    def open(self) -> RegistryClient:
        """Reach the registry, choose TLS or plain HTTP and how to log in."""
        session = _Session(self._settings.registry_timeout_s, self._verify)
        probe = self._probe(session)
        credentials = find_credentials(self.reference.registry, self._settings)
        challenge = probe.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        backend = "basic" if probe.status_code == 401 and scheme == "basic" else "token"
        client = _Oras(
            self.reference.registry, insecure=self._scheme == "http", tls_verify=self._verify, auth_backend=backend
        )
        client.session = session
        client.auth.session = session
        if probe.status_code == 401:
            if scheme == "basic":
                if credentials is None:
                    raise RegistryError(self._login_hint("asks for a login"))
                client.basic_header = "Basic " + oras.auth.utils.get_basic_auth(
                    credentials.username, credentials.password
                )
                self._check_login(session, client.basic_header, credentials)
            elif credentials is not None:
                client.auth.set_basic_auth(credentials.username, credentials.password)
        elif probe.status_code != 200:
            raise RegistryError(
                f"{self.reference.registry} does not answer as an OCI registry (GET /v2/ gave {probe.status_code})"
            )
        self._oras = client
        self._base = f"{self._scheme}://{self.reference.registry}/v2/{self.reference.repository}"
        logger.debug(
            "Registry %s over %s, login: %s",
            self.reference.registry,
            self._scheme,
            credentials.origin if credentials else "none",
        )
        return self

    def _probe(self, session: requests.Session) -> requests.Response:
        url = f"{self._scheme}://{self.reference.registry}/v2/"
        try:
            return session.get(url)
        except requests.exceptions.SSLError as exc:
            if self.reference.is_loopback:
                plain = self._plain_http_probe(session)
                if plain is not None:
                    logger.info(
                        "%s does not speak TLS: using plain HTTP (a registry on this machine)", self.reference.registry
                    )
                    self._scheme = "http"
                    return plain
            raise RegistryUnreachable(
                f"TLS with {self.reference.registry} failed ({_reason(exc)}): give its CA certificate with "
                "TUNGSTEN_REGISTRY_CA_FILE, or --insecure if it serves plain HTTP"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"Cannot reach the registry {self.reference.registry}: {_reason(exc)}") from None

    def _plain_http_probe(self, session: requests.Session) -> requests.Response | None:
        try:
            response = session.get(f"http://{self.reference.registry}/v2/")
        except requests.exceptions.RequestException:
            return None
        return response if response.status_code in (200, 401) else None

    def _check_login(self, session: requests.Session, header: str, credentials: Credentials) -> None:
        try:
            response = session.get(f"{self._scheme}://{self.reference.registry}/v2/", headers={"Authorization": header})
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"The registry {self.reference.registry} failed: {_reason(exc)}") from None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{self.reference.registry} refused the login of {credentials.username!r} (from {credentials.origin})"
            )

    def _login_hint(self, what: str) -> str:
        return (
            f"{self.reference.registry} {what}: set TUNGSTEN_REGISTRY_USERNAME and TUNGSTEN_REGISTRY_PASSWORD, "
            f"or run `docker login {self.reference.registry}`"
        )

    @property
    def _client(self) -> _Oras:
        if self._oras is None:
            raise RuntimeError("RegistryClient.open() first")
        return self._oras

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return self._guard(lambda: self._client.do_request(url, method, **kwargs))

    def _guard(self, call: Callable[[], requests.Response]) -> requests.Response:
        try:
            response = call()
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"The registry {self.reference.registry} failed: {_reason(exc)}") from None
        except ValueError as exc:  # oras: a login challenge it cannot answer
            raise RegistryError(self._login_hint(f"asks for a login it could not get ({exc})")) from None
        if response.status_code in (401, 403):
            raise RegistryError(
                self._login_hint(f"refused access to {self.reference.repository} ({response.status_code})")
            )
        return response

    # -- manifests -------------------------------------------------------------------
    def manifest_digest(self, accept: tuple[str, ...]) -> str | None:
        """The digest the reference's tag or digest names now (a HEAD: transfers no content)."""
        response = self._request(
            "HEAD", f"{self._base}/manifests/{self.reference.manifest_reference}", headers={"Accept": ", ".join(accept)}
        )
        if response.status_code == 404:
            raise RegistryError(f"No {self.reference} in the registry (unknown repository, tag or digest)")
        _check(response, f"HEAD {self.reference}")
        return response.headers.get("Docker-Content-Digest")

    def get_manifest(self, digest: str | None, accept: tuple[str, ...]) -> tuple[bytes, str]:
        """The manifest's bytes and digest, checked against ``digest`` when it is known."""
        response = self._request(
            "GET",
            f"{self._base}/manifests/{digest or self.reference.manifest_reference}",
            headers={"Accept": ", ".join(accept)},
        )
        if response.status_code == 404:
            raise RegistryError(f"No {self.reference} in the registry (unknown repository, tag or digest)")
        _check(response, f"GET {self.reference}")
        data = response.content
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = digest or response.headers.get("Docker-Content-Digest")
        if expected and expected.startswith("sha256:") and expected != actual:
            raise DigestMismatch(f"The manifest of {self.reference} does not match its digest {expected}")
        return data, actual

    def put_manifest(self, data: bytes, media_type: str, tag: str) -> str:
        """Upload a manifest under ``tag``; returns the digest the registry gave it."""
        response = self._request(
            "PUT", f"{self._base}/manifests/{tag}", data=data, headers={"Content-Type": media_type}
        )
        _check(response, f"PUT the manifest of {self.reference}")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        given = response.headers.get("Docker-Content-Digest", actual)
        if given != actual:
            raise DigestMismatch(f"{self.reference.registry} stored the manifest as {given}, not {actual}")
        return actual

    # -- blobs -----------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        response = self._request("HEAD", f"{self._base}/blobs/{digest}")
        if response.status_code == 404:
            return False
        _check(response, f"HEAD blob {digest}")
        return True

    def read_blob(self, digest: str, size: int, limit: int) -> bytes:
        """A small blob (a config) in memory, checked against its digest and size."""
        if size > limit:
            raise RegistryError(f"{self.reference}: a {size}-byte config is more than a model's metadata")
        chunks = list(self._stream_blob(digest, size))
        return b"".join(chunks)

    def download_blob(self, digest: str, size: int, target: Path) -> None:
        """Write a blob to ``target``, checked against its digest and size (else nothing is left)."""
        try:
            with target.open("wb") as file:
                for chunk in self._stream_blob(digest, size):
                    file.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _stream_blob(self, digest: str, size: int) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        received = 0
        response = self._request("GET", f"{self._base}/blobs/{digest}", stream=True)
        with response:
            if response.status_code == 404:
                raise RegistryError(f"{self.reference}: the registry has lost the blob {digest}")
            _check(response, f"GET blob {digest}")
            try:
                for chunk in response.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > size:
                        break
                    hasher.update(chunk)
                    yield chunk
            except requests.exceptions.RequestException as exc:
                raise RegistryUnreachable(
                    f"Downloading {digest} from {self.reference.registry} failed: {_reason(exc)}"
                ) from None
        if received != size or "sha256:" + hasher.hexdigest() != digest:
            raise DigestMismatch(
                f"The blob {digest} of {self.reference} does not match its digest or size: the registry's copy is "
                "corrupted or was tampered with; nothing was stored"
            )

    def upload_blob(self, digest: str, size: int, open_content: Callable[[], IO[bytes]]) -> bool:
        """Upload a blob unless the repository has it; returns whether it was sent."""
        if self.has_blob(digest):
            return False
        start = self._request("POST", f"{self._base}/blobs/uploads/", headers={"Content-Length": "0"})
        _check(start, f"start an upload to {self.reference}")
        location = self._client._get_location(start, self._client.get_container(str(self.reference)))
        if not location:
            raise RegistryError(f"{self.reference.registry} gave no upload location")
        separator = "&" if "?" in location else "?"
        with open_content() as content:
            response = self._request(
                "PUT",
                f"{location}{separator}digest={digest}",
                data=_Body(content, size),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        if response.status_code == 400 and b"DIGEST_INVALID" in response.content:
            raise DigestMismatch(f"{self.reference.registry} found that a file does not match its digest {digest}")
        _check(response, f"upload {digest}")
        return True


class _Body:
    """A file object for requests to stream (it reads ``read``; ``len`` gives Content-Length)."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._size = size

    def read(self, amount: int = -1) -> bytes:
        return self._file.read(amount)

    def __len__(self) -> int:
        return self._size


def _check(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RegistryError(f"{what} failed: {response.status_code} {_registry_message(response)}".rstrip())


def _registry_message(response: requests.Response) -> str:
    """The registry's own error text (OCI ``{"errors": [{"code", "message"}]}``), if any."""
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return response.reason or ""


def _reason(exc: requests.exceptions.RequestException) -> str:
    """A requests error, short: what failed, without the pool and URL details."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("No address associated", "unknown host"),
        ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
        ("WRONG_VERSION_NUMBER", "the server does not speak TLS"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "the server closed the connection"),
    ):
        if marker in text:
            return reason
    return type(exc).__name__
