"""Which IP addresses URL inputs and webhooks may reach: the IANA special-purpose registries as data.

The tables below are the IANA IPv4 and IPv6 Special-Purpose Address Registries
(RFC 6890, updated by RFC 8190), entry by entry, with each block's name and RFC. A block
IANA marks "globally reachable" passes; every other block is refused unless
``TUNGSTEN_URL_ALLOWLIST`` covers it. Added to the registries, because the guard has
always refused them: IPv4 and IPv6 multicast, the deprecated IPv6 site-local block, and
all IPv6 space outside 2000::/3, the only block IANA allocates for global unicast.

The most specific block holding an address decides (192.0.0.9/32, globally reachable,
sits inside 192.0.0.0/24, which is not). Four IPv6 blocks carry an IPv4 address, and
that address decides: IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96), 6to4
(2002::/16) and Teredo (2001::/32, both its server and its client address).

We do not rely on ``ipaddress.IPv4Address.is_global`` alone: its idea of global differs
between Python releases and from IANA (``192.0.0.8`` is global to Python 3.11).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Reach(enum.Enum):
    """What IANA says of a block, as the guard reads it."""

    #: Globally reachable: passes.
    GLOBAL = "global"
    #: Not globally reachable (or "N/A"): refused unless allow-listed.
    LOCAL = "local"
    #: Holds an IPv4 address, which decides.
    EMBEDS_IPV4 = "embeds IPv4"


@dataclass(frozen=True)
class SpecialBlock:
    """One entry of a special-purpose registry."""

    network: IPNetwork
    name: str
    rfc: str
    reach: Reach

    def describe(self) -> str:
        return f"{self.network}: {self.name}, {self.rfc}"


def _block(network: str, name: str, rfc: str, reach: Reach = Reach.LOCAL) -> SpecialBlock:
    return SpecialBlock(ipaddress.ip_network(network), name, rfc, reach)


_GLOBAL = Reach.GLOBAL
_EMBEDS = Reach.EMBEDS_IPV4

#: The IANA IPv4 Special-Purpose Address Registry, plus multicast (refused as always).
IPV4_BLOCKS: tuple[SpecialBlock, ...] = (
    _block("0.0.0.0/8", '"This network"', "RFC 791, section 3.2"),
    _block("0.0.0.0/32", '"This host on this network"', "RFC 1122, section 3.2.1.3"),
    _block("10.0.0.0/8", "Private-Use", "RFC 1918"),
    _block("100.64.0.0/10", "Shared Address Space", "RFC 6598"),
    _block("127.0.0.0/8", "Loopback", "RFC 1122, section 3.2.1.3"),
    _block("169.254.0.0/16", "Link Local", "RFC 3927"),
    _block("172.16.0.0/12", "Private-Use", "RFC 1918"),
    _block("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890, section 2.1"),
    _block("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335"),
    _block("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    _block("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", _GLOBAL),
    _block("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", _GLOBAL),
    _block("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
    _block("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
    _block("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737"),
    _block("192.31.196.0/24", "AS112-v4", "RFC 7535", _GLOBAL),
    _block("192.52.193.0/24", "AMT", "RFC 7450", _GLOBAL),
    _block("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    _block("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751"),
    _block("192.168.0.0/16", "Private-Use", "RFC 1918"),
    _block("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", _GLOBAL),
    _block("198.18.0.0/15", "Benchmarking", "RFC 2544"),
    _block("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737"),
    _block("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737"),
    _block("224.0.0.0/4", "Multicast", "RFC 5771"),
    _block("240.0.0.0/4", "Reserved", "RFC 1112, section 4"),
    _block("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919 section 7"),
)

#: The IANA IPv6 Special-Purpose Address Registry, plus multicast and site-local (refused as always).
IPV6_BLOCKS: tuple[SpecialBlock, ...] = (
    _block("::1/128", "Loopback Address", "RFC 4291"),
    _block("::/128", "Unspecified Address", "RFC 4291"),
    _block("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", _EMBEDS),
    _block("64:ff9b::/96", "IPv4-IPv6 Translation", "RFC 6052", _EMBEDS),
    _block("64:ff9b:1::/48", "IPv4-IPv6 Translation (local use)", "RFC 8215"),
    _block("100::/64", "Discard-Only Address Block", "RFC 6666"),
    _block("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780"),
    _block("2001::/23", "IETF Protocol Assignments", "RFC 2928"),
    _block("2001::/32", "TEREDO", "RFC 4380, RFC 8190", _EMBEDS),
    _block("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", _GLOBAL),
    _block("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", _GLOBAL),
    _block("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", _GLOBAL),
    _block("2001:2::/48", "Benchmarking", "RFC 5180, RFC Errata 1752"),
    _block("2001:3::/32", "AMT", "RFC 7450", _GLOBAL),
    _block("2001:4:112::/48", "AS112-v6", "RFC 7535", _GLOBAL),
    _block("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843"),
    _block("2001:20::/28", "ORCHIDv2", "RFC 7343", _GLOBAL),
    _block("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", _GLOBAL),
    _block("2001:db8::/32", "Documentation", "RFC 3849"),
    _block("2002::/16", "6to4", "RFC 3056", _EMBEDS),
    _block("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", _GLOBAL),
    _block("3fff::/20", "Documentation", "RFC 9637"),
    _block("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    _block("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190"),
    _block("fe80::/10", "Link-Local Unicast", "RFC 4291"),
    _block("fec0::/10", "Site-Local (deprecated)", "RFC 3879"),
    _block("ff00::/8", "Multicast", "RFC 4291"),
)

#: The only IPv6 space allocated for global unicast; the rest is reserved by the IETF.
GLOBAL_UNICAST_V6 = _block("2000::/3", "Global Unicast", "RFC 4291, IANA IPv6 Address Space", _GLOBAL)
_OUTSIDE_GLOBAL_UNICAST = "outside 2000::/3, the only IPv6 space allocated for global unicast (RFC 4291)"


def special_block(address: IPAddress) -> SpecialBlock | None:
    """The most specific registry entry holding ``address`` (None if none does)."""
    blocks = IPV4_BLOCKS if address.version == 4 else IPV6_BLOCKS
    found: SpecialBlock | None = None
    for block in blocks:
        if address in block.network and (found is None or block.network.prefixlen > found.network.prefixlen):
            found = block
    return found


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv4-carrying IPv6 address holds (none for other addresses)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _NAT64.network:
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        server, client = address.teredo
        return (client, server)
    return ()


_NAT64 = next(block for block in IPV6_BLOCKS if block.name == "IPv4-IPv6 Translation")


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not public (None if it is): the block that holds it, named as IANA names it."""
    block = special_block(address)
    if block is None:
        if isinstance(address, ipaddress.IPv6Address) and address not in GLOBAL_UNICAST_V6.network:
            return _OUTSIDE_GLOBAL_UNICAST
        return None
    if block.reach is Reach.GLOBAL:
        return None
    if block.reach is Reach.EMBEDS_IPV4:
        assert isinstance(address, ipaddress.IPv6Address)
        for inner in embedded_ipv4(address):
            reason = refusal(inner)
            if reason:
                return f"{block.name} holding {inner}, in {reason}"
        return None
    return block.describe()
