"""API keys: tokens, their hashed records in Redis, and the per-key rate limit.

A token reads ``tk_<id>_<secret>``: the id names the key's record (hash field ``<id>`` of
``Keys.api_keys``), the secret is 256 random bits of which Redis holds only the SHA-256.
A salt or a slow hash would add nothing: the secret is random and as long as a hash, so
it cannot be guessed from its digest. The token itself is never stored or logged.

Scopes nest: ``read`` reads its owner's predictions, ``predict`` also creates and
cancels them, ``admin`` acts on every prediction and reads the server's state. A key's
owner is itself, or the key it was made for (``--owner``): keys of one owner share its
predictions and its count of queued inputs (``Keys.owner_queued``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import redis

from tungstenkit._errors import TungstenError
from tungstenkit._queue._keys import Keys, now_iso

#: From the least to the most allowed; each scope allows what the ones before it do.
SCOPES = ("read", "predict", "admin")
TOKEN_PREFIX = "tk_"
_ID_HEX = 16


class ApiKeyError(TungstenError):
    """An API key cannot be created or changed as asked (unknown id, bad scope, ...)."""


@dataclass(frozen=True)
class ApiKey:
    """A key's record, as Redis holds it (the secret's digest, never the secret)."""

    id: str
    name: str
    scope: str
    secret_sha256: str
    created: str
    #: The key whose predictions this one acts on: itself, unless made for another.
    owner: str
    #: Requests per second it may send, with bursts of as many (0: no limit).
    rps: float = 0.0
    #: Inputs its owner's predictions may have waiting or running (0: no limit).
    max_queued: int = 0
    #: When it was revoked ("" while it is valid).
    revoked: str = ""

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this key's, in constant time."""
        return hmac.compare_digest(_digest(secret), self.secret_sha256)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ApiKey:
        return cls(**json.loads(raw))

    def listing(self) -> dict[str, Any]:
        """What ``tungsten keys list`` shows: everything but the digest."""
        shown = asdict(self)
        del shown["secret_sha256"]
        return shown


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """A token's key id and secret, or None if it does not read ``tk_<id>_<secret>``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if len(key_id) != _ID_HEX or any(c not in "0123456789abcdef" for c in key_id) or len(secret) < 16:
        return None
    return key_id, secret


def new_key(name: str, scope: str, *, owner: str = "", rps: float = 0.0, max_queued: int = 0) -> tuple[ApiKey, str]:
    """A fresh key's record and its token (shown once, stored nowhere)."""
    if scope not in SCOPES:
        raise ApiKeyError(f"Unknown scope {scope!r}: expected one of {', '.join(SCOPES)}")
    if rps < 0 or max_queued < 0:
        raise ApiKeyError("Limits must be 0 (none) or more")
    key_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        id=key_id,
        name=name,
        scope=scope,
        secret_sha256=_digest(secret),
        created=now_iso(),
        owner=owner or key_id,
        rps=rps,
        max_queued=max_queued,
    )
    return record, f"{TOKEN_PREFIX}{key_id}_{secret}"


class KeyStore:
    """Managing keys (``tungsten keys``), synchronously."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self.keys = keys

    def create(
        self, name: str, scope: str, *, owner: str = "", rps: float = 0.0, max_queued: int = 0
    ) -> tuple[ApiKey, str]:
        if owner:
            found = self.get(owner)
            if found is None or found.revoked:
                raise ApiKeyError(f"No valid API key {owner} to make a key for")
            owner = found.owner
        record, token = new_key(name, scope, owner=owner, rps=rps, max_queued=max_queued)
        self._redis.hset(self.keys.api_keys, record.id, record.to_json())
        return record, token

    def get(self, key_id: str) -> ApiKey | None:
        raw = cast("bytes | None", self._redis.hget(self.keys.api_keys, key_id))
        return ApiKey.from_json(raw) if raw is not None else None

    def all(self) -> list[ApiKey]:
        found = cast("list[bytes]", self._redis.hvals(self.keys.api_keys))
        return sorted((ApiKey.from_json(raw) for raw in found), key=lambda k: k.created)

    def valid(self) -> list[ApiKey]:
        """The keys not revoked."""
        return [key for key in self.all() if not key.revoked]

    def queued(self, owners: Sequence[str]) -> list[int]:
        """The inputs waiting or running of each owner's predictions."""
        if not owners:
            return []
        values = cast("list[bytes | None]", self._redis.mget([self.keys.owner_queued(owner) for owner in owners]))
        return [int(v or 0) for v in values]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key (its record stays, marked, so that ``list`` shows it)."""
        found = self.get(key_id)
        if found is None:
            raise ApiKeyError(f"No API key {key_id}")
        if found.revoked:
            return found
        revoked = replace(found, revoked=now_iso())
        self._redis.hset(self.keys.api_keys, key_id, revoked.to_json())
        return revoked
