"""HTTP errors and the handlers that turn domain errors into ``{"detail": ...}`` responses.

This is the only place where errors become status codes.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import OutOfMemoryError, ReadOnlyError
from starlette.requests import Request
from starlette.responses import JSONResponse

from tungstenkit._errors import (
    IdempotencyKeyReused,
    InvalidWebhook,
    OwnerQueueFull,
    PredictionNotFound,
    QueueFull,
    RedisUnavailable,
)
from tungstenkit._log_safety import printable

logger = logging.getLogger(__name__)

#: Seconds a client should wait before retrying when Redis is unreachable.
REDIS_RETRY_AFTER_S = 2


class HTTPError(Exception):
    """An error answered with ``status_code`` and ``{"detail": detail}``."""

    status_code = 400

    def __init__(self, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else "invalid request")
        self.detail = detail
        self.headers = headers


class MalformedBody(HTTPError):
    status_code = 400


class PayloadTooLarge(HTTPError):
    status_code = 413


class InvalidInput(HTTPError):
    """Validation errors, pydantic-style: a list of ``{"loc", "msg", "type"}``."""

    status_code = 422


class NotFound(HTTPError):
    status_code = 404


class Unauthorized(HTTPError):
    """No API key, or one that is unknown, revoked or mistyped."""

    status_code = 401

    def __init__(self, detail: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HTTPError):
    """A valid API key whose scope does not allow the request."""

    status_code = 403


class RateLimited(HTTPError):
    """An API key past its request rate (``headers`` carry ``Retry-After``)."""

    status_code = 429


class SyncTimeout(HTTPError):
    status_code = 504


class Draining(HTTPError):
    """The process is stopping and takes no new predictions."""

    status_code = 503


class Overloaded(HTTPError):
    """The process holds as many requests or body bytes as it may; retry shortly."""

    status_code = 503


class UnsupportedMediaType(HTTPError):
    status_code = 415


class ClientGone(HTTPError):
    """The client left mid-request: nobody reads this answer, and nothing is logged for it."""

    status_code = 400


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def prediction_not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PredictionNotFound)
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def queue_full(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (QueueFull, OwnerQueueFull))
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: %s", request.method, printable(request.url.path), exc)
    return JSONResponse(
        {"detail": "The prediction queue is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
    )


async def redis_refuses_writes(request: Request, exc: Exception) -> JSONResponse:
    """Redis answers but takes no writes: full (``maxmemory`` with no eviction) or a replica
    during a failover. Clients retry as for an outage."""
    logger.warning("%s %s: Redis refused a write: %s", request.method, printable(request.url.path), exc)
    reason = "full" if isinstance(exc, OutOfMemoryError) else "read-only"
    return JSONResponse(
        {"detail": f"The prediction queue is {reason} and takes no new predictions; retry later"},
        status_code=503,
        headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
    )


async def invalid_webhook(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidWebhook)
    detail = [{"loc": ["query", exc.field], "msg": str(exc), "type": "webhook"}]
    return JSONResponse({"detail": detail}, status_code=422)


async def idempotency_key_reused(request: Request, exc: Exception) -> JSONResponse:
    detail = [{"loc": ["header", "Idempotency-Key"], "msg": str(exc), "type": "idempotency_key_reused"}]
    return JSONResponse({"detail": detail}, status_code=422)


EXCEPTION_HANDLERS = {
    HTTPError: http_error,
    PredictionNotFound: prediction_not_found,
    QueueFull: queue_full,
    OwnerQueueFull: queue_full,
    RedisUnavailable: redis_unavailable,
    OutOfMemoryError: redis_refuses_writes,
    ReadOnlyError: redis_refuses_writes,
    InvalidWebhook: invalid_webhook,
    IdempotencyKeyReused: idempotency_key_reused,
}
