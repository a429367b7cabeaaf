"""Downloading URL inputs without becoming a proxy into the server's own network.

Every hop is checked the same way (BentoML's CVE-2025-54381 fix, the OWASP SSRF advice):

1. the scheme is http or https;
2. the host name is resolved once, and every address it resolves to must be public:
   every block of the IANA special-purpose registries that is not globally reachable
   (loopback, private, link-local with the cloud metadata at 169.254.169.254, shared,
   documentation, benchmarking ...), multicast and reserved space are refused, including
   IPv4 addresses embedded in IPv6 (mapped, 6to4, NAT64, Teredo); see
   ``tungstenkit._special_addresses``. An allow-list entry that names the host or covers
   the address lets it through, on the ports the entry names (by default only the
   scheme's own, 80 or 443);
3. the connection goes to the address that was checked, not to a second lookup, so a
   DNS answer that changes between check and connect (rebinding) gains nothing;
4. a redirect is followed only to a URL that passes the same checks, at most
   ``max_redirects`` times.

Bodies are read up to ``max_bytes`` with connect, read and overall time limits, and
only the identity encoding is accepted (no gzip bombs). The errors raised here say
exactly what went wrong, for the log; what a client is told is decided by the caller
(``tungstenkit._prepare`` tells it no more than that the URL could not be fetched).

Why our own, on ``http.client``, rather than httpx or requests: those resolve the host
again when they connect and follow redirects themselves, so no check made before the call
covers a DNS answer that changes (rebinding) or a redirect into the private network. The
check has to sit between the lookup and the connect, on every hop; that is all this
module adds, and the rest (the HTTP exchange) is the standard library's.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from tungstenkit._allowlist import DEFAULT_PORTS, Allowlist
from tungstenkit._errors import FetchError, FileTooLarge, URLRefused
from tungstenkit._special_addresses import IPAddress, refusal

SCHEMES = ("http", "https")
#: Characters a request target may hold as they are; any other (a space, a control or a
#: non-ASCII character) is percent-encoded, as browsers and ``requests`` do, rather than
#: refused by ``http.client`` with an error that quotes the whole URL, token and all.
_URL_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
USER_AGENT = "tungstenkit-serving (+https://github.com/tungsten-ai/tungstenkit)"


@dataclass(frozen=True)
class FetchPolicy:
    """Where URL inputs may be fetched from, and how much time and room a download gets."""

    allowlist: Allowlist = field(default_factory=Allowlist)
    max_bytes: int = 100 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    url: str


@dataclass(frozen=True)
class Target:
    """A URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    literal: IPAddress | None


def host_of(url: str) -> str:
    """The host name and port that a URL's requests are counted against (per-host limits)."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or parts.scheme}"
    except ValueError:
        return url


def parse_url(url: str, allowlist: Allowlist) -> Target:
    """Check a URL's form, and its address when it is a literal IP; ``URLRefused`` if not fit.

    Needs no DNS, so the API can run it on every request.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise URLRefused(f"malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise URLRefused(f"unsupported scheme {scheme!r}; URLs must be http or https")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise URLRefused("the URL has no host")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    path = quote(parts.path or "/", safe=_URL_CHARACTERS)
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_CHARACTERS)
    target = Target(scheme, host, DEFAULT_PORTS[scheme] if port is None else port, path, literal)
    if literal is not None:
        _check_address(target, literal, allowlist)
    return target


def _check_address(target: Target, address: IPAddress, allowlist: Allowlist) -> None:
    if allowlist.allows(target.host, address, target.port, target.scheme):
        return
    reason = refusal(address)
    if reason:
        where = f"{address} is" if target.host == str(address) else f"{target.host} resolves to {address},"
        entry = f"[{address}]" if address.version == 6 else str(address)
        if target.port != DEFAULT_PORTS[target.scheme]:
            entry += f":{target.port}"
        raise URLRefused(f"{where} not a public address ({reason}); add {entry} to TUNGSTEN_URL_ALLOWLIST to allow it")


def resolve(target: Target, allowlist: Allowlist) -> list[IPAddress]:
    """The addresses to connect to: every address the host resolves to, each checked."""
    if target.literal is not None:
        return [target.literal]
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {target.host}: {getattr(exc, 'strerror', None) or exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"{target.host} resolves to no address")
    for address in addresses:
        # One non-public answer refuses the host: a name that mixes public and private
        # addresses is more likely an attack than a deployment.
        _check_address(target, address, allowlist)
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand (``Host`` stays the name)."""

    def __init__(self, target: Target, address: IPAddress, policy: FetchPolicy) -> None:
        super().__init__(target.host, target.port, timeout=policy.connect_timeout_s)
        self._address = str(address)
        self._read_timeout = policy.read_timeout_s

    def _open_socket(self) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.settimeout(self._read_timeout)
        return sock

    def connect(self) -> None:
        self.sock = self._open_socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a checked address; the certificate is verified against the host name."""

    def __init__(self, target: Target, address: IPAddress, policy: FetchPolicy) -> None:
        super().__init__(target, address, policy)
        self._ssl = ssl.create_default_context()

    def connect(self) -> None:
        sock = self._open_socket()
        try:
            self.sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def fetch(url: str, policy: FetchPolicy) -> Download:
    """GET ``url`` under ``policy``; raises ``URLRefused``, ``FetchError`` or ``FileTooLarge``."""
    deadline = time.monotonic() + policy.total_timeout_s
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = parse_url(current, policy.allowlist)
        addresses = resolve(target, policy.allowlist)
        status, location, download = _get(target, addresses, policy, deadline, current)
        if download is not None:
            return download
        if not location:
            raise FetchError(f"the server answered {status} (a redirect) without a Location")
        current = urljoin(current, location)
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _get(
    target: Target, addresses: Iterable[IPAddress], policy: FetchPolicy, deadline: float, url: str
) -> tuple[int, str | None, Download | None]:
    connection = _connect(target, addresses, policy)
    try:
        return _exchange(connection, target, policy, deadline, url)
    finally:
        connection.close()


def _connect(target: Target, addresses: Iterable[IPAddress], policy: FetchPolicy) -> http.client.HTTPConnection:
    """A connection pinned to the first of the checked ``addresses`` that accepts one."""
    last_error: OSError | None = None
    for address in addresses:
        kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        connection = kind(target, address, policy)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            last_error = exc
            continue
        return connection
    raise FetchError(f"cannot connect to {target.host}:{target.port}: {_describe(last_error)}")


def _exchange(
    connection: http.client.HTTPConnection, target: Target, policy: FetchPolicy, deadline: float, url: str
) -> tuple[int, str | None, Download | None]:
    with _exchange_errors(target, policy):
        connection.request(
            "GET", target.path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
        )
        response = connection.getresponse()
        try:
            return _read_response(response, target, policy, deadline, url)
        finally:
            response.close()


@contextlib.contextmanager
def _exchange_errors(target: Target, policy: FetchPolicy) -> Iterator[None]:
    """Network failures during a request and its answer, as ``FetchError``s that say which."""
    try:
        yield
    except TimeoutError:
        raise FetchError(f"no answer from {target.host} within {policy.read_timeout_s:g}s") from None
    except ssl.SSLError as exc:
        raise FetchError(f"TLS with {target.host} failed: {exc.reason or exc}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"the connection to {target.host} failed: {_describe(exc)}") from None


def _read_response(
    response: http.client.HTTPResponse, target: Target, policy: FetchPolicy, deadline: float, url: str
) -> tuple[int, str | None, Download | None]:
    if response.status in _REDIRECTS:
        return response.status, response.getheader("Location"), None
    if not 200 <= response.status < 300:
        raise FetchError(f"the server answered {response.status} {response.reason}".rstrip())
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise FetchError(f"the server sent a {encoding}-encoded body; only unencoded bodies are accepted")
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FileTooLarge(f"the file is {declared} bytes; the limit is {policy.max_bytes} (TUNGSTEN_MAX_FILE_BYTES)")
    parts: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError(f"the download took longer than {policy.total_timeout_s:g}s")
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > policy.max_bytes:
            raise FileTooLarge(f"the file is over the limit of {policy.max_bytes} bytes (TUNGSTEN_MAX_FILE_BYTES)")
        parts.append(chunk)
    content_type = response.getheader("Content-Type") or ""
    return response.status, None, Download(b"".join(parts), content_type, url)


#: How much of a POST's answer is read (and thrown away) before the connection closes.
_ANSWER_BYTES = 64 * 1024


def post(url: str, body: bytes, headers: Mapping[str, str], policy: FetchPolicy) -> int:
    """POST ``body`` to ``url`` under ``policy`` (webhook deliveries); returns the status.

    The address is checked as for downloads and the connection pinned to it; redirects
    are not followed (a 3xx is returned like any other status). Raises ``URLRefused`` or
    ``FetchError``.
    """
    deadline = time.monotonic() + policy.total_timeout_s
    target = parse_url(url, policy.allowlist)
    connection = _connect(target, resolve(target, policy.allowlist), policy)
    try:
        return _post_exchange(connection, target, body, headers, policy, deadline)
    finally:
        connection.close()


def _post_exchange(
    connection: http.client.HTTPConnection,
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    policy: FetchPolicy,
    deadline: float,
) -> int:
    sent = {"User-Agent": USER_AGENT, "Content-Type": "application/json", "Accept-Encoding": "identity", **headers}
    with _exchange_errors(target, policy):
        connection.request("POST", target.path, body=body, headers=sent)
        response = connection.getresponse()
        try:
            read = 0
            while read < _ANSWER_BYTES and time.monotonic() < deadline:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                read += len(chunk)
            return response.status
        finally:
            response.close()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no address to try"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
