"""What a submit asks for besides its inputs: an idempotency key, a deadline, a priority."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import QueryParams
from starlette.requests import Request

from tungstenkit._queue import PRIORITIES
from tungstenkit.app.error_responses import InvalidInput

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: What an Idempotency-Key may be: 1 to 255 printable ASCII characters (a UUID, say).
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
#: Set on the answer to a request whose Idempotency-Key came with the same request before.
REPLAYED_HEADER = "Idempotent-Replayed"
#: A deadline may come as ``?deadline_s=`` or as this header (the query wins).
DEADLINE_HEADER = "X-Tungsten-Deadline-S"
#: The longest deadline a request may set, in seconds.
MAX_DEADLINE_S = 86400.0


@dataclass(frozen=True)
class SubmitOptions:
    idempotency_key: str | None = None
    #: Milliseconds from now by which a worker must start the prediction (0: no deadline).
    deadline_ms: int = 0
    #: One of ``PRIORITIES``.
    priority: str = "normal"

    @classmethod
    def parse(cls, request: Request) -> SubmitOptions:
        """The options of ``request``; ``InvalidInput`` (422) for an unusable one."""
        if not request.scope["query_string"] and not any(
            name in _OPTION_HEADERS for name, _ in request.scope["headers"]
        ):
            return _NO_OPTIONS  # most submits: one look at the raw headers, no lookups
        return cls(_idempotency_key(request), _deadline_ms(request), _priority(request))

    def fingerprint(self) -> list[str]:
        """The options that make two requests with the same inputs different requests."""
        return [str(self.deadline_ms), self.priority]


_NO_OPTIONS = SubmitOptions()
#: The headers that set an option, as ASGI spells header names (lower case).
_OPTION_HEADERS = frozenset(name.lower().encode() for name in (IDEMPOTENCY_HEADER, DEADLINE_HEADER))

#: What a request without a query string has (parsing an empty one still costs).
_NO_QUERY = QueryParams()


def query_of(request: Request) -> QueryParams:
    """The request's query parameters; most submits have none, which are not parsed."""
    return request.query_params if request.scope["query_string"] else _NO_QUERY


def _invalid(loc: list[str], msg: str) -> InvalidInput:
    return InvalidInput([{"loc": loc, "msg": msg, "type": "value_error"}])


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise _invalid(["header", IDEMPOTENCY_HEADER], "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def _deadline_ms(request: Request) -> int:
    raw, loc = query_of(request).get("deadline_s"), ["query", "deadline_s"]
    if raw is None:
        raw, loc = request.headers.get(DEADLINE_HEADER), ["header", DEADLINE_HEADER]
    if raw is None:
        return 0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_DEADLINE_S:  # also rejects NaN
        raise _invalid(loc, f"a deadline is a number of seconds, more than 0 and at most {MAX_DEADLINE_S:g}")
    return max(1, round(value * 1000))


def _priority(request: Request) -> str:
    priority = query_of(request).get("priority", "normal")
    if priority not in PRIORITIES:
        raise _invalid(["query", "priority"], f"priority must be one of {', '.join(PRIORITIES)}")
    return priority
