"""API keys in the API: who is calling, what its key allows, and whose predictions it may see.

With ``api_keys`` on, every prediction route asks ``authorize`` for the caller before it
does anything: a missing or invalid key is 401, a scope too small 403, a key past its
request rate 429. A prediction (and its output files) belongs to the owner of the key
that created it; any other key but an admin one is told it does not exist (404, the
very answer an unknown id gets), so that no key learns which ids exist.

Key records are read from Redis at most every ``RECORD_CACHE_S`` per key and process,
so a revoked key stops working everywhere within that time, with no round trip on most
requests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

from tungstenkit._queue import AsyncPredictionQueue
from tungstenkit._queue._api_keys import ApiKey, parse_token
from tungstenkit.app.error_responses import Forbidden, NotFound, RateLimited, Unauthorized

#: How long a process trusts the key record it read: revocation applies within this.
RECORD_CACHE_S = 0.5
#: Owners of predictions remembered per process (they never change; beyond this the
#: oldest are read again).
REMEMBERED_OWNERS = 100_000


@dataclass(frozen=True)
class Caller:
    """The key a request came with (``request.state.api_key``)."""

    key_id: str
    #: Whose predictions it acts on, and whose queued inputs it counts toward.
    owner: str
    admin: bool
    #: Inputs its owner's predictions may have waiting or running (0: no limit).
    max_queued: int

    def may_see(self, owner: str | None) -> bool:
        """Whether it may act on a prediction of ``owner`` (None: made without a key)."""
        return self.admin or owner == self.owner


async def authorize(request: Request, scope: str) -> Caller | None:
    """The caller's key, checked for ``scope`` (None with API keys off: anyone may)."""
    access: AccessControl | None = request.app.state.serving.access
    return None if access is None else await access.authorize(request, scope)


def not_found(prediction_id: str) -> NotFound:
    """What an unknown id and another owner's prediction both get."""
    return NotFound(f"Prediction {prediction_id} not found")


class AccessControl:
    """Checks API keys for one API process (``ServingContext.access``: None with keys off)."""

    def __init__(self, queue: AsyncPredictionQueue) -> None:
        self._queue = queue
        self._records: dict[str, tuple[float, ApiKey]] = {}
        self._reading: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._owners: OrderedDict[str, str] = OrderedDict()

    async def authorize(self, request: Request, scope: str) -> Caller:
        """The caller, if its key is valid, allows ``scope`` and is within its request rate."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Missing API key: send it as Authorization: Bearer <key>")
        parsed = parse_token(token.strip())
        record = await self._record(parsed[0]) if parsed else None
        if parsed is None or record is None or record.revoked or not record.matches(parsed[1]):
            raise Unauthorized("Invalid API key (unknown, revoked or mistyped)")
        if not record.allows(scope):
            raise Forbidden(f"This API key has the scope {record.scope!r}; this needs {scope!r}")
        if record.rps > 0:
            wait_s = await self._queue.take_request(record.id, record.rps)
            if wait_s > 0:
                raise RateLimited(
                    f"This API key may send {record.rps:g} requests per second; retry later",
                    headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
                )
        caller = Caller(record.id, record.owner, record.allows("admin"), record.max_queued)
        request.state.api_key = caller
        request.state.api_key_id = record.id
        return caller

    async def _record(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._records.get(key_id)
        if cached is not None and now - cached[0] < RECORD_CACHE_S:
            return cached[1]
        # Requests that miss the cache together share one read.
        reading = self._reading.get(key_id)
        if reading is None:
            reading = asyncio.ensure_future(self._queue.api_key(key_id))
            self._reading[key_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key_id, None))
        record = await asyncio.shield(reading)
        if record is not None:
            # Only keys that exist are kept: random ids cannot fill the memory.
            self._records[key_id] = (now, record)
        return record

    # -- ownership -------------------------------------------------------------------
    def created(self, prediction_id: str, caller: Caller) -> None:
        self._remember(prediction_id, caller.owner)

    async def check_owner(self, caller: Caller, prediction_id: str) -> None:
        """``NotFound`` unless ``caller`` may see the prediction (or there is none)."""
        if caller.admin:
            return
        owner = self._owners.get(prediction_id)
        if owner is None:
            owner = await self._queue.owner(prediction_id)
            if owner is not None:
                self._remember(prediction_id, owner)
        if not caller.may_see(owner):
            raise not_found(prediction_id)

    def _remember(self, prediction_id: str, owner: str) -> None:
        self._owners[prediction_id] = owner
        if len(self._owners) > REMEMBERED_OWNERS:
            self._owners.popitem(last=False)
