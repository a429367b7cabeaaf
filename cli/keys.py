"""``tungsten keys``: create, list and revoke the API keys of a served model."""

from __future__ import annotations

from collections.abc import Sequence

from tungstenkit._queue import ApiKey, KeyStore

_COLUMNS = ("ID", "NAME", "SCOPE", "OWNER", "RPS", "MAX QUEUED", "QUEUED", "CREATED", "REVOKED")


def _limit(value: float) -> str:
    return f"{value:g}" if value else "-"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def listing(store: KeyStore) -> str:
    """Every key of the namespace (never a secret, nor its digest), oldest first."""
    keys = store.all()
    if not keys:
        return f"No API keys in namespace {store.keys.namespace}"
    queued = dict(zip([k.owner for k in keys], store.queued([k.owner for k in keys])))
    rows = [_COLUMNS] + [
        (
            k.id,
            k.name,
            k.scope,
            "-" if k.owner == k.id else k.owner,
            _limit(k.rps),
            _limit(k.max_queued),
            str(queued.get(k.owner, 0)),
            k.created,
            k.revoked or "-",
        )
        for k in keys
    ]
    return _table(rows)


def created_note(key: ApiKey) -> str:
    """What ``create`` says on standard error, beside the token alone on standard output."""
    limits = [f"{key.rps:g} requests/s" if key.rps else "", f"{key.max_queued} queued inputs" if key.max_queued else ""]
    shown = ", ".join(x for x in limits if x) or "no limits"
    owner = f", acting for key {key.owner}" if key.owner != key.id else ""
    return (
        f"Created API key {key.id} ({key.name}, scope {key.scope}, {shown}{owner}).\n"
        "The token above is shown only now: store it (a secret manager); the server keeps only its hash."
    )
