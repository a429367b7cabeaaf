"""``tungsten status``: workers, queue depth and recent throughput, as a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import click
import redis

from tungstenkit._errors import RedisUnavailable, TungstenError
from tungstenkit._measurements import PREDICTION_OUTCOMES
from tungstenkit._queue import (
    CONNECTION_ERRORS,
    Keys,
    Snapshot,
    WebhookQueue,
    connect,
    find_namespaces,
    read_snapshot,
    redacted,
)
from tungstenkit._redis_server import embedded_redis_urls
from tungstenkit._settings import Settings

#: How long `status` tries each Redis before giving up on it.
_CONNECT_TIMEOUT_S = 2.0


@dataclass
class Target:
    """One Redis and the namespaces (served models) to show from it."""

    url: str
    client: redis.Redis
    namespaces: list[str]


def find_targets(settings: Settings, redis_url: str | None, namespace: str | None) -> list[Target]:
    """The Redis to read: ``redis_url``, else the embedded Redis of each running ``tungsten serve``."""
    if redis_url:
        client = connect(redis_url, _CONNECT_TIMEOUT_S, settings.redis_tls)
        namespaces = [namespace] if namespace else find_namespaces(client)
        if not namespaces:
            raise TungstenError(f"No model is served through {redacted(redis_url)} (no tungsten queue in it)")
        return [Target(redis_url, client, namespaces)]
    targets = []
    for found, url in embedded_redis_urls(settings.home).items():
        if namespace and found != namespace:
            continue
        try:
            targets.append(Target(url, connect(url, _CONNECT_TIMEOUT_S), [found]))
        except RedisUnavailable:
            continue  # a `tungsten serve` that stopped without cleaning up
    if not targets:
        where = settings.home / "redis"
        raise TungstenError(
            f"No running `tungsten serve` with an embedded Redis found under {where}; pass --redis-url (or REDIS_URL)"
        )
    return targets


def _ago(unix: str | None, now: float) -> str:
    try:
        return f"{max(now - float(unix or ''), 0):.1f}s ago"
    except ValueError:
        return "-"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def render(namespace: str, url: str, snapshot: Snapshot, now: float) -> str:
    """The status of one namespace as text."""
    workers = sorted(snapshot.workers, key=lambda w: w.worker_id)
    throughput = sum(float(w.fields.get("inputs_per_s") or 0) for w in workers)
    outcomes = ", ".join(f"{int(snapshot.metrics.get(f'predictions:{o}', 0))} {o}" for o in PREDICTION_OUTCOMES)
    lines = [
        f"{namespace}  (Redis {redacted(url)})",
        (
            f"queued inputs: {snapshot.queued_inputs}   throughput: {throughput:.2f} inputs/s (last minute)   "
            f"predictions: {outcomes}   webhook events waiting: {snapshot.webhook_events_waiting}"
        ),
        "",
    ]
    if not workers:
        lines.append("no live workers")
        return "\n".join(lines)
    rows = [("WORKER", "HOST", "PID", "MODEL", "STATE", "BATCH", "INPUTS/S", "LAST HEARTBEAT")]
    for worker in workers:
        f = worker.fields
        batch = f"{f.get('current_batch', '0')}/{f.get('batch_size', '?')}"
        rows.append(
            (
                worker.worker_id,
                f.get("host", "?"),
                f.get("pid", "?"),
                f.get("model", "?"),
                f.get("state", "?"),
                batch,
                f"{float(f.get('inputs_per_s') or 0):.2f}",
                _ago(f.get("heartbeat_unix"), now),
            )
        )
    return "\n".join(lines + _table(rows))


def show(targets: list[Target]) -> str:
    """Every target's status, read now."""
    parts = []
    for target in targets:
        for namespace in target.namespaces:
            try:
                snapshot = read_snapshot(target.client, Keys(namespace))
            except CONNECTION_ERRORS as exc:
                parts.append(f"{namespace}  (Redis {redacted(target.url)}): unreachable ({exc})")
                continue
            parts.append(render(namespace, target.url, snapshot, time.time()))
    return "\n\n".join(parts)


def watch(targets: list[Target], interval_s: float, count: int | None, sleep: Callable[[float], None]) -> None:
    """Redraw the status every ``interval_s`` until interrupted (or ``count`` times)."""
    shown = 0
    while count is None or shown < count:
        if shown:
            sleep(interval_s)
        click.clear()
        click.echo(f"tungsten status, every {interval_s:g}s (Ctrl+C to stop)   {time.strftime('%H:%M:%S')}\n")
        click.echo(show(targets), nl=True)
        shown += 1


def webhook_secret(settings: Settings, targets: list[Target]) -> str:
    """The secret that signs webhooks: the configured one, else the namespace's generated one."""
    if settings.webhook_secret:
        return settings.webhook_secret
    target, namespace = one_namespace(targets)
    return WebhookQueue(target.client, Keys(namespace)).secret()


def one_namespace(targets: list[Target]) -> tuple[Target, str]:
    """The one model found, for commands that act on one."""
    pairs = [(t, n) for t in targets for n in t.namespaces]
    if len(pairs) != 1:
        names = ", ".join(n for _, n in pairs)
        raise TungstenError(f"Several models found ({names}): pick one with --namespace")
    return pairs[0]
