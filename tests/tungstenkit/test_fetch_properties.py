"""Properties of the address guard (Hypothesis): no spelling of a refused address gets through.

The refused networks here are written out again, apart from the tables of
``tungstenkit._special_addresses``, so that a block dropped from those tables fails
these tests. Only whole networks that nothing globally reachable sits inside are listed.
Every IPv4 spelling generated is one the C resolver reads as a number (``inet_aton``):
resolving it asks no DNS server.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tungstenkit._errors import URLRefused
from tungstenkit._fetch import Allowlist, parse_url, resolve

REFUSED_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/29",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
REFUSED_V6 = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:2::/48",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "4000::/3",
        "::/8",
    )
]
EXAMPLES = settings(max_examples=150, deadline=None, database=None)


def _address_in(networks: list) -> st.SearchStrategy:
    return st.sampled_from(networks).flatmap(
        lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: net.network_address + i)
    )


refused_v4 = _address_in(REFUSED_V4)
refused_v6 = _address_in(REFUSED_V6)


def _number(value: int, style: str) -> str:
    return {
        "dec": str(value),
        "oct": "0" + format(value, "o"),
        "hex": "0x" + format(value, "x"),
        "HEX": "0X" + format(value, "X"),
    }[style]


@st.composite
def ipv4_spellings(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` as ``inet_aton`` reads it: 1 to 4 parts, each decimal, octal or hex."""
    value = int(address)
    octets = list(address.packed)
    parts = draw(st.sampled_from([1, 2, 3, 4]))
    # The last part holds the bytes the earlier parts leave over (a.b.c: c is 16 bits).
    numbers = octets[: parts - 1] + [value & ((1 << (8 * (5 - parts))) - 1)]
    styles = st.sampled_from(["dec", "oct", "hex", "HEX"])
    text = ".".join(_number(n, draw(styles)) for n in numbers)
    assert socket.inet_aton(text) == address.packed  # the spelling names the address, no other
    return text + draw(st.sampled_from(["", "."]))  # a trailing dot names the same host


@st.composite
def ipv6_embeddings(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """An IPv6 address that carries ``address``: mapped, NAT64, 6to4 or Teredo."""
    text = draw(_embedding(address))
    carrier = ipaddress.IPv6Address(text)
    assert address in (
        carrier.ipv4_mapped,
        carrier.sixtofour,
        (carrier.teredo or (None, None))[1],
        ipaddress.IPv4Address(int(carrier) & 0xFFFFFFFF),
    )
    return text


@st.composite
def _embedding(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    value = int(address)
    kind = draw(st.sampled_from(["mapped", "mapped-dotted", "nat64", "nat64-dotted", "6to4", "teredo"]))
    if kind == "mapped":
        return str(ipaddress.IPv6Address((0xFFFF << 32) | value))
    if kind == "mapped-dotted":
        return f"::ffff:{address}"
    if kind == "nat64":
        return str(ipaddress.IPv6Address((0x64FF9B << 96) | value))
    if kind == "nat64-dotted":
        return f"64:ff9b::{address}"
    if kind == "6to4":
        return str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | draw(st.integers(0, (1 << 80) - 1))))
    server = 0x4136E378  # 65.54.227.120, a public Teredo server; the client is stored inverted
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (0x8000 << 48) | (value ^ 0xFFFFFFFF)))


@st.composite
def ipv6_spellings(draw: st.DrawFn, address: ipaddress.IPv6Address) -> str:
    text = draw(st.sampled_from([address.compressed, address.exploded, address.exploded.upper()]))
    if address in ipaddress.IPv6Network("fe80::/10"):
        text += draw(st.sampled_from(["", "%25eth0", "%251"]))  # a zone, as URLs write it
    return text


def _url(draw: st.DrawFn, host: str) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    userinfo = draw(st.sampled_from(["", "user@", "user:pw@"]))
    port = draw(st.sampled_from(["", ":80", ":443", ":6379", ":8080"]))
    return f"{scheme}://{userinfo}{host}{port}/{draw(st.sampled_from(['', 'x', 'a?b=c']))}"


@st.composite
def refused_urls(draw: st.DrawFn) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    kind = draw(st.sampled_from(["v4", "v4-in-v6", "v6"]))
    if kind == "v4":
        address = draw(refused_v4)
        return _url(draw, draw(ipv4_spellings(address))), address
    if kind == "v4-in-v6":
        address = draw(refused_v4)
        return _url(draw, f"[{draw(ipv6_embeddings(address))}]"), address
    address = draw(refused_v6)
    return _url(draw, f"[{draw(ipv6_spellings(address))}]"), address


def _guard(url: str, allowlist: Allowlist) -> list:
    """What ``fetch`` checks before it connects anywhere: the URL, then every address of its host."""
    return resolve(parse_url(url, allowlist), allowlist)


@EXAMPLES
@given(refused_urls())
def test_no_spelling_of_a_refused_address_gets_through(case: tuple) -> None:
    url, address = case
    with pytest.raises(URLRefused):
        accepted = _guard(url, Allowlist())
        pytest.fail(f"{url} ({address}) was let through to {accepted}")


@EXAMPLES
@given(refused_v4, st.integers(1, 65535), st.integers(1, 65535))
def test_an_allowlisted_address_is_open_on_its_port_only(
    address: ipaddress.IPv4Address, allowed: int, asked: int
) -> None:
    allowlist = Allowlist.parse(f"{address}:{allowed}")
    url = f"http://{address}:{asked}/"
    if asked == allowed:
        assert _guard(url, allowlist) == [address]
    else:
        with pytest.raises(URLRefused):
            _guard(url, allowlist)


@EXAMPLES
@given(refused_v4)
def test_a_portless_entry_opens_the_schemes_port_only(address: ipaddress.IPv4Address) -> None:
    allowlist = Allowlist.parse(f"{address}")
    assert _guard(f"http://{address}/", allowlist) == [address]
    assert _guard(f"https://{address}/", allowlist) == [address]
    for url in (f"http://{address}:443/", f"https://{address}:80/", f"http://{address}:8080/"):
        with pytest.raises(URLRefused):
            _guard(url, allowlist)
