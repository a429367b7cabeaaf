"""The URL guard and downloader, against a loopback HTTP server."""

from __future__ import annotations

import ipaddress

import pytest

from tests.filesupport import FileServer, png
from tungstenkit._errors import ConfigError, FetchError, FileTooLarge, URLRefused
from tungstenkit._fetch import Allowlist, FetchPolicy, fetch, parse_url, refusal

LOOPBACK = FetchPolicy(allowlist=Allowlist.parse("127.0.0.1/32"), read_timeout_s=5)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # AWS, GCP and Azure metadata
        ("fe80::1", "link-local"),
        ("100.100.100.200", "shared"),  # Alibaba Cloud metadata, in the CGNAT range
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("gopher://example.com/", "unsupported scheme"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1/x", "127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://example.com:99999/", "malformed URL"),
    ],
)
def test_urls_refused_without_any_lookup(url: str, message: str) -> None:
    with pytest.raises(URLRefused, match=message):
        parse_url(url, Allowlist())


def test_allowlist_entries() -> None:
    allowlist = Allowlist.parse("10.0.0.0/8, 127.0.0.1 files.internal *.corp.example [::1]")
    assert allowlist.allows_address(ipaddress.ip_address("10.9.9.9"))
    assert allowlist.allows_address(ipaddress.ip_address("::1"))
    assert not allowlist.allows_address(ipaddress.ip_address("192.168.0.1"))
    assert allowlist.allows_host("files.internal") and allowlist.allows_host("a.b.corp.example")
    assert not allowlist.allows_host("corp.example.evil") and not allowlist.allows_host("xfiles.internal")
    assert parse_url("http://10.2.3.4/x", allowlist).port == 80
    for bad in ("10.0.0.0/33", "http://x", "a..b"):
        with pytest.raises(ConfigError, match="TUNGSTEN_URL_ALLOWLIST"):
            Allowlist.parse(bad)


def test_fetches_from_an_allowlisted_loopback_server(file_server: FileServer) -> None:
    url = file_server.add("/cat.png", png(), headers={"Content-Type": "image/png"})
    download = fetch(url, LOOPBACK)
    assert download.data == png() and download.content_type == "image/png"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "127.1"])
def test_the_default_refuses_loopback_and_never_connects(file_server: FileServer, host: str) -> None:
    file_server.add("/cat.png", png())
    url = file_server.url("/cat.png", host)
    with pytest.raises(URLRefused, match="loopback"):
        fetch(url, FetchPolicy())
    assert file_server.requests == []


def test_an_allowlisted_host_name_may_resolve_to_loopback(file_server: FileServer) -> None:
    file_server.add("/a", b"hello")
    policy = FetchPolicy(allowlist=Allowlist.parse("localhost"))
    assert fetch(file_server.url("/a", "localhost"), policy).data == b"hello"


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.1/internal", "http://[::1]/x", "file:///etc/passwd"]
)
def test_redirects_into_private_ranges_are_refused(file_server: FileServer, target: str) -> None:
    url = file_server.add("/go", status=302, headers={"Location": target})
    with pytest.raises(URLRefused):
        fetch(url, LOOPBACK)
    assert file_server.requests == ["/go"]


def test_redirects_are_followed_and_counted(file_server: FileServer) -> None:
    file_server.add("/final", b"done")
    file_server.add("/hop2", status=307, headers={"Location": "/final"})  # relative
    url = file_server.add("/hop1", status=301, headers={"Location": file_server.url("/hop2")})
    assert fetch(url, LOOPBACK).data == b"done"
    with pytest.raises(FetchError, match="more than 1 redirects"):
        fetch(url, FetchPolicy(allowlist=LOOPBACK.allowlist, max_redirects=1))
    loop = file_server.add("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(FetchError, match="redirects"):
        fetch(loop, LOOPBACK)


def test_size_limit_with_and_without_content_length(file_server: FileServer) -> None:
    small = FetchPolicy(allowlist=LOOPBACK.allowlist, max_bytes=1000)
    declared = file_server.add("/big", b"x" * 5000)
    with pytest.raises(FileTooLarge, match="5000 bytes; the limit is 1000"):
        fetch(declared, small)
    streamed = file_server.add("/stream", b"x" * 300_000, length=False)
    with pytest.raises(FileTooLarge, match="over the limit of 1000 bytes"):
        fetch(streamed, small)
    assert fetch(file_server.add("/ok", b"x" * 1000), small).data == b"x" * 1000


def test_http_errors_encodings_timeouts_and_refused_connections(file_server: FileServer) -> None:
    with pytest.raises(FetchError, match="answered 404"):
        fetch(file_server.url("/missing"), LOOPBACK)
    gzipped = file_server.add("/gz", b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="gzip-encoded"):
        fetch(gzipped, LOOPBACK)
    slow = file_server.add("/slow", b"late", delay=30)
    with pytest.raises(FetchError, match="no answer .* within 0.3s"):
        fetch(slow, FetchPolicy(allowlist=LOOPBACK.allowlist, read_timeout_s=0.3))
    closed = FileServer()  # bound but never serving: take its port, then free it
    port = closed.port
    closed.server_close()
    with pytest.raises(FetchError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/x", LOOPBACK)
