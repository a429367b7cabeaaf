"""Which model a namespace serves: written by ``tungsten serve``, read by starting workers."""

from __future__ import annotations

import redis

from tungstenkit._queue._keys import Keys


def publish_model_digest(client: redis.Redis, keys: Keys, digest: str | None) -> None:
    """Record the served model's digest; a model without one (a folder) clears the record."""
    if digest is None:
        client.delete(keys.model_digest)
    else:
        client.set(keys.model_digest, digest)


def served_model_digest(client: redis.Redis, keys: Keys) -> str | None:
    """The digest the namespace's API serves, if it published one."""
    value = client.get(keys.model_digest)
    return value.decode() if isinstance(value, bytes) else value
