"""Registry references (``REGISTRY/REPOSITORY[:TAG][@DIGEST]``), parsed by Docker's grammar.

A text is a registry reference when its first component, before the first ``/``, names a
registry the way Docker tells one: it contains a ``.`` or a ``:`` (a host name with a
domain, a port) or is ``localhost``. So ``registry.example.com/team/model:v1`` and
``localhost:5000/model`` are references; ``examples/model`` and ``model:v1`` are not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tungstenkit._errors import RegistryError

_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_COMPONENT}(?:\.{_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_REGISTRY = re.compile(rf"{_HOST}(?::[0-9]{{1,5}})?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
#: The one digest algorithm OCI registries must support, and the one this package writes.
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

FORM = "REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST], the registry a host with a '.' or a ':PORT', or localhost"


@dataclass(frozen=True)
class RegistryReference:
    """Where a model lives in an OCI registry."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> RegistryReference:
        """The reference ``text`` names; ``RegistryError`` saying what is wrong otherwise."""
        registry, slash, rest = text.partition("/")
        if not slash or not _names_registry(registry):
            raise RegistryError(f"{text!r} is not a registry reference: expected {FORM}")
        if not _REGISTRY.fullmatch(registry):
            raise RegistryError(f"{text!r}: {registry!r} is not a valid registry host")
        rest, at, digest = rest.partition("@")
        if at and not DIGEST.fullmatch(digest):
            raise RegistryError(f"{text!r}: the digest must be sha256: and 64 lowercase hex digits")
        repository, tag = rest, None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            repository, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise RegistryError(f"{text!r}: invalid tag {tag!r} (letters, digits, '_', '.' and '-', at most 128)")
        if not _REPOSITORY.fullmatch(repository):
            raise RegistryError(
                f"{text!r}: invalid repository {repository!r} (lowercase letters and digits, separated by "
                "'.', '_', '__', '-' or '/')"
            )
        return cls(registry, repository, tag, digest or None)

    @property
    def host(self) -> str:
        """The registry's host name or address, without port or brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (localhost, 127.0.0.0/8, ::1)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def name(self) -> str:
        """The repository's last component (``team/text-to-image`` → ``text-to-image``)."""
        return self.repository.rsplit("/", 1)[-1]

    @property
    def manifest_reference(self) -> str:
        """What the registry's manifest endpoint takes: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> RegistryReference:
        return RegistryReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> RegistryReference | None:
    """The registry reference ``text`` is, or None when it is not one (a name, a path)."""
    registry = text.partition("/")[0]
    if "/" not in text or not _names_registry(registry):
        return None
    try:
        return RegistryReference.parse(text)
    except RegistryError:
        return None


def _names_registry(component: str) -> bool:
    """Docker's rule for the first component of a reference."""
    return "." in component or ":" in component or component == "localhost"
