"""``TUNGSTEN_URL_ALLOWLIST``: the hosts, networks and ports URL inputs and webhooks may reach
although they are not public.

An entry opens only the ports it names (``files.internal:443``, ``10.0.0.0/8:8000-8099``,
``[fd00::1]:*``); an entry without a port opens only the URL scheme's own, 80 or 443. An
address open on every port would let a redirect reach whatever else listens there (a
Redis on 6379), and tell, by how the fetch failed, which ports are open.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tungstenkit._errors import ConfigError
from tungstenkit._special_addresses import IPAddress, IPNetwork

#: The port a URL of each scheme uses when it names none; all that a port-less entry opens.
DEFAULT_PORTS = {"http": 80, "https": 443}
_PORTS = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?", re.ASCII)


@dataclass(frozen=True)
class AllowEntry:
    """One ``TUNGSTEN_URL_ALLOWLIST`` entry: a network or a host name, and the ports it opens."""

    #: The network the entry covers, or None for a host-name entry.
    network: IPNetwork | None = None
    #: A host name, lower case; ``.example.com`` covers its subdomains.
    host: str | None = None
    #: The ports allowed, lowest and highest; None: only the URL scheme's own (80 or 443).
    ports: tuple[int, int] | None = None

    def allows_port(self, port: int, scheme: str) -> bool:
        if self.ports is None:
            return port == DEFAULT_PORTS.get(scheme)
        return self.ports[0] <= port <= self.ports[1]

    def covers_host(self, host: str) -> bool:
        if self.host is None:
            return False
        host = host.lower().rstrip(".")
        return host == self.host or (self.host.startswith(".") and host.endswith(self.host))

    def covers_address(self, address: IPAddress) -> bool:
        return self.network is not None and address.version == self.network.version and address in self.network


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks that URL inputs may reach although they are not public, port by port."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, text: str, setting: str = "TUNGSTEN_URL_ALLOWLIST") -> Allowlist:
        """Comma- or space-separated entries: ``TARGET`` or ``TARGET:PORTS``.

        TARGET is a network (``10.0.0.0/8``), an address (``10.1.2.3``, ``[fd00::1]``; an
        IPv6 one in brackets when a port follows) or a host name (``*.corp`` or ``.corp``
        for its subdomains). PORTS is a port (``8080``), a range (``8000-8099``) or ``*``
        for every port. Without PORTS, only the URL scheme's port (80 or 443) is allowed.
        """
        return cls(tuple(_parse_entry(raw, setting) for raw in text.replace(",", " ").split()))

    def allows(self, host: str, address: IPAddress | None, port: int, scheme: str) -> bool:
        """Whether an entry names ``host`` or covers ``address``, and allows ``port``."""
        return any(
            (entry.covers_host(host) or (address is not None and entry.covers_address(address)))
            and entry.allows_port(port, scheme)
            for entry in self.entries
        )

    def __bool__(self) -> bool:
        return bool(self.entries)


def _parse_entry(raw: str, setting: str) -> AllowEntry:
    entry = raw.strip().lower()
    problem = (
        f"{setting}: {raw!r} is not a network (10.0.0.0/8), an address or a host name, "
        "optionally followed by :PORT, :LOW-HIGH or :* ([v6]:PORT for IPv6)"
    )
    target, ports_text = entry, None
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(problem)
        target, ports_text = inside, (rest[1:] if rest else None)
    elif entry.count(":") == 1:
        target, _, ports_text = entry.partition(":")
    ports = _parse_ports(ports_text, problem) if ports_text is not None else None
    try:
        return AllowEntry(network=ipaddress.ip_network(target, strict=False), ports=ports)
    except ValueError:
        if entry.startswith("["):
            raise ConfigError(problem) from None
    if target.startswith("*."):
        target = target[1:]
    name = target.lstrip(".")
    if not name or "/" in target or ":" in target or not all(part for part in name.split(".")):
        raise ConfigError(problem)
    return AllowEntry(host=target, ports=ports)


def _parse_ports(text: str, problem: str) -> tuple[int, int]:
    if text == "*":
        return (1, 65535)
    found = _PORTS.fullmatch(text)
    if found is None:
        raise ConfigError(problem)
    ports = (int(found[1]), int(found[2] or found[1]))
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise ConfigError(problem)
    return ports
