"""The URL guard and downloader, against a loopback HTTP server."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.filesupport import FileServer, png
from tungstenkit._errors import ConfigError, FetchError, FileTooLarge, URLRefused
from tungstenkit._fetch import Allowlist, FetchPolicy, fetch, parse_url
from tungstenkit._special_addresses import IPV4_BLOCKS, IPV6_BLOCKS, refusal, special_block

LOOPBACK = FetchPolicy(allowlist=Allowlist.parse("127.0.0.1/32:*"), read_timeout_s=5)

#: One address in each block of the IANA special-purpose registries (and of the blocks the
#: guard adds), with the block's name when the address is refused, None when it passes.
REGISTRY_CASES = [
    ("0.1.2.3", '"This network"'),
    ("0.0.0.0", '"This host on this network"'),
    ("10.1.2.3", "Private-Use"),
    ("100.100.100.200", "Shared Address Space"),  # Alibaba Cloud's metadata service
    ("127.0.0.1", "Loopback"),
    ("127.255.255.254", "Loopback"),
    ("169.254.169.254", "Link Local"),  # AWS, GCP and Azure metadata
    ("172.31.255.255", "Private-Use"),
    ("192.0.0.100", "IETF Protocol Assignments"),
    ("192.0.0.6", "IPv4 Service Continuity Prefix"),
    ("192.0.0.8", "IPv4 dummy address"),  # global to Python's ipaddress, not to IANA
    ("192.0.0.9", None),  # Port Control Protocol Anycast: globally reachable
    ("192.0.0.10", None),  # TURN anycast: globally reachable
    ("192.0.0.170", "NAT64/DNS64 Discovery"),
    ("192.0.0.171", "NAT64/DNS64 Discovery"),
    ("192.0.2.1", "Documentation (TEST-NET-1)"),
    ("192.31.196.1", None),  # AS112-v4
    ("192.52.193.1", None),  # AMT
    ("192.88.99.1", "Deprecated (6to4 Relay Anycast)"),
    ("192.88.99.2", "6a44-relay anycast address"),
    ("192.168.1.1", "Private-Use"),
    ("192.175.48.1", None),  # Direct Delegation AS112 Service
    ("198.19.0.1", "Benchmarking"),
    ("198.51.100.7", "Documentation (TEST-NET-2)"),
    ("203.0.113.9", "Documentation (TEST-NET-3)"),
    ("224.0.0.1", "Multicast"),
    ("239.255.255.250", "Multicast"),
    ("240.0.0.1", "Reserved"),
    ("255.255.255.255", "Limited Broadcast"),
    ("::1", "Loopback Address"),
    ("::", "Unspecified Address"),
    ("::ffff:127.0.0.1", "Loopback"),  # IPv4-mapped: the IPv4 address decides
    ("64:ff9b::a00:1", "Private-Use"),  # NAT64 of 10.0.0.1
    ("64:ff9b:1::1", "IPv4-IPv6 Translation (local use)"),
    ("100::1", "Discard-Only Address Block"),
    ("100:0:0:1::1", "Dummy IPv6 Prefix"),
    ("2001:100::1", "IETF Protocol Assignments"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Documentation (TEST-NET-1)"),  # Teredo, client 192.0.2.45
    ("2001:1::1", None),  # Port Control Protocol Anycast
    ("2001:1::2", None),  # TURN anycast
    ("2001:1::3", None),  # DNS-SD SRP anycast
    ("2001:2::1", "Benchmarking"),
    ("2001:3::1", None),  # AMT
    ("2001:4:112::1", None),  # AS112-v6
    ("2001:10::1", "Deprecated (previously ORCHID)"),
    ("2001:20::1", None),  # ORCHIDv2
    ("2001:30::1", None),  # Drone Remote ID
    ("2001:db8::1", "Documentation"),
    ("2002:a00:1::", "Private-Use"),  # 6to4 of 10.0.0.1
    ("2620:4f:8000::1", None),  # Direct Delegation AS112 Service
    ("3fff::1", "Documentation"),
    ("5f00::1", "Segment Routing (SRv6) SIDs"),
    ("fd00::1", "Unique-Local"),
    ("fe80::1", "Link-Local Unicast"),
    ("fec0::1", "Site-Local (deprecated)"),
    ("ff02::1", "Multicast"),
    ("4000::1", "outside 2000::/3"),  # reserved by the IETF
    ("::a00:1", "outside 2000::/3"),  # the deprecated IPv4-compatible form
]


@pytest.mark.parametrize(("address", "name"), REGISTRY_CASES)
def test_each_special_purpose_block_is_refused_unless_globally_reachable(address: str, name: str | None) -> None:
    found = refusal(ipaddress.ip_address(address))
    if name is None:
        assert found is None
    else:
        assert found is not None and name in found


def test_every_block_of_the_tables_has_its_case() -> None:
    covered = {special_block(ipaddress.ip_address(address)) for address, _ in REGISTRY_CASES}
    assert [block.network for block in (*IPV4_BLOCKS, *IPV6_BLOCKS) if block not in covered] == []


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:8.8.8.8", None),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        ("2002:7f00:1::1", "127.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),  # Teredo: server 65.54.227.120, client 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),  # Teredo client 10.0.0.1
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "10.0.0.1"),  # Teredo server 10.0.0.1
    ],
)
def test_ipv4_inside_ipv6_decides(address: str, embedded: str | None) -> None:
    found = refusal(ipaddress.ip_address(address))
    if embedded is None:
        assert found is None
    else:
        assert found is not None and f"holding {embedded}," in found


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("gopher://example.com/", "unsupported scheme"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1/x", r"127.0.0.1 is not a public address \(127.0.0.0/8: Loopback, RFC 1122"),
        ("http://[::1]:8080/x", r"add \[::1\]:8080 to TUNGSTEN_URL_ALLOWLIST"),
        ("http://169.254.169.254/latest/meta-data/", "Link Local"),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped Address holding 10.0.0.1, in 10.0.0.0/8: Private-Use"),
        ("http://192.0.0.8/", "IPv4 dummy address"),
        ("http://example.com:99999/", "malformed URL"),
    ],
)
def test_urls_refused_without_any_lookup(url: str, message: str) -> None:
    with pytest.raises(URLRefused, match=message):
        parse_url(url, Allowlist())


def test_allowlist_entries_name_hosts_networks_and_ports() -> None:
    allowlist = Allowlist.parse(
        "10.0.0.0/8, 127.0.0.1:8080 files.internal:443 *.corp.example:8000-8099 [::1]:3000 fd00::/8 "
        "[fe80::/10]:* 192.168.0.0/16:*"
    )
    ip = ipaddress.ip_address
    allowed = [
        ("x", ip("10.9.9.9"), 80, "http"),
        ("x", ip("10.9.9.9"), 443, "https"),
        ("127.0.0.1", ip("127.0.0.1"), 8080, "http"),
        ("files.internal", ip("10.0.0.1"), 443, "https"),
        ("files.internal", None, 443, "http"),
        ("a.b.corp.example", None, 8099, "https"),
        ("::1", ip("::1"), 3000, "http"),
        ("fd00::1", ip("fd00::1"), 443, "https"),
        ("fe80::1", ip("fe80::1"), 1, "http"),
        ("192.168.3.4", ip("192.168.3.4"), 65535, "http"),
    ]
    refused = [
        ("x", ip("10.9.9.9"), 8080, "http"),  # no port in the entry: only the scheme's own
        ("x", ip("10.9.9.9"), 80, "https"),
        ("127.0.0.1", ip("127.0.0.1"), 6379, "http"),
        ("127.0.0.1", ip("127.0.0.1"), 80, "http"),
        ("files.internal", None, 80, "http"),
        ("a.b.corp.example", None, 8100, "https"),
        ("corp.example.evil", None, 8000, "http"),
        ("xfiles.internal", None, 443, "https"),
        ("::1", ip("::1"), 80, "http"),
        ("192.169.0.1", ip("192.169.0.1"), 80, "http"),
    ]
    assert [case for case in allowed if not allowlist.allows(*case)] == []
    assert [case for case in refused if allowlist.allows(*case)] == []
    assert parse_url("http://10.2.3.4/x", allowlist).port == 80
    bad = [
        "10.0.0.0/33",
        "http://x",
        "a..b",
        "files.internal:0",
        "files.internal:70000",
        "x:9-8",
        "x:",
        "x:\u00b2",
        "[::1",
        "[::1]8080",
        "[files.internal]:80",
        "::1:80:",
        "10.0.0.1:*:*",
    ]
    for entry in bad:
        with pytest.raises(ConfigError, match="TUNGSTEN_URL_ALLOWLIST"):
            Allowlist.parse(entry)


def test_an_allowlisted_address_opens_only_the_ports_its_entry_names(file_server: FileServer) -> None:
    # Something else listening on the allow-listed address, a Redis say; its listen
    # queue shows whether anyone connected.
    other = socket.create_server(("127.0.0.1", 0))
    other.setblocking(False)
    port = other.getsockname()[1]
    try:
        policy = FetchPolicy(allowlist=Allowlist.parse(f"127.0.0.1:{file_server.port}"), read_timeout_s=5)
        assert fetch(file_server.add("/a", b"hello"), policy).data == b"hello"
        hop = file_server.add("/to-redis", status=302, headers={"Location": f"http://127.0.0.1:{port}/"})
        with pytest.raises(URLRefused, match=f"add 127.0.0.1:{port} to TUNGSTEN_URL_ALLOWLIST"):
            fetch(hop, policy)
        with pytest.raises(URLRefused):
            fetch(f"http://localhost:{port}/", FetchPolicy(allowlist=Allowlist.parse(f"localhost:{file_server.port}")))
        with pytest.raises(URLRefused):  # an entry without a port opens port 80 alone
            fetch(file_server.url("/a"), FetchPolicy(allowlist=Allowlist.parse("127.0.0.1")))
        with pytest.raises(BlockingIOError):
            other.accept()  # nobody ever connected
    finally:
        other.close()


def test_fetches_from_an_allowlisted_loopback_server(file_server: FileServer) -> None:
    url = file_server.add("/cat.png", png(), headers={"Content-Type": "image/png"})
    download = fetch(url, LOOPBACK)
    assert download.data == png() and download.content_type == "image/png"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "127.1"])
def test_the_default_refuses_loopback_and_never_connects(file_server: FileServer, host: str) -> None:
    file_server.add("/cat.png", png())
    url = file_server.url("/cat.png", host)
    with pytest.raises(URLRefused, match="Loopback"):
        fetch(url, FetchPolicy())
    assert file_server.requests == []


def test_spaces_controls_and_non_ascii_in_a_url_are_percent_encoded(file_server: FileServer) -> None:
    file_server.add("/a%20b%1B%0B%C2%85?token=t%20u", b"found")
    assert fetch(file_server.url("/a b\x1b\x0b\u0085?token=t u"), LOOPBACK).data == b"found"
    assert file_server.requests == ["/a%20b%1B%0B%C2%85?token=t%20u"]


def test_an_allowlisted_host_name_may_resolve_to_loopback(file_server: FileServer) -> None:
    file_server.add("/a", b"hello")
    policy = FetchPolicy(allowlist=Allowlist.parse(f"localhost:{file_server.port}"))
    assert fetch(file_server.url("/a", "localhost"), policy).data == b"hello"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.1/internal",
        "http://[::1]/x",
        "file:///etc/passwd",
    ],
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
    hang_up = file_server.add("/hang-up", hang_up=True)
    with pytest.raises(FetchError, match="the connection to 127.0.0.1 failed: Remote end closed connection"):
        fetch(hang_up, LOOPBACK)
    closed = FileServer()  # bound but never serving: take its port, then free it
    port = closed.port
    closed.server_close()
    with pytest.raises(FetchError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/x", LOOPBACK)
