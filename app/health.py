"""``GET /health``: liveness and readiness of the service, and the live workers.

200 when Redis answers and at least one worker has the model loaded; 503 otherwise (and
while the API drains), so load balancers and orchestrators can use it as a readiness
probe. ``?scope=api`` answers for this API process alone (200 unless it drains), for
probes of an API whose workers may be scaled to zero. Each worker is listed from its heartbeat, numbers as JSON numbers.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tungstenkit._errors import RedisUnavailable
from tungstenkit._measurements import parse_gpus
from tungstenkit._queue import AsyncPredictionQueue, WorkerInfo
from tungstenkit.app.error_responses import InvalidInput

_READY_STATES = frozenset({"ready", "busy"})
#: ``GET /health?scope=``: ``model`` (a worker can run the model) or ``api`` (this API
#: process takes predictions: up and not draining; Redis and workers are not checked).
HEALTH_SCOPES = ("model", "api")
#: Longest /health waits on Redis: a probe must answer promptly, and a Redis that does not
#: answer within this (paused, overloaded, cut off) is unavailable as far as it can tell.
HEALTH_TIMEOUT_S = 0.8
#: Heartbeat fields that are numbers (Redis keeps every field as a string).
_INTEGER_FIELDS = frozenset({"pid", "batch_size", "max_batch_size", "current_batch", "batches", "inputs"})
_FLOAT_FIELDS = frozenset({"heartbeat_unix", "inputs_per_s"})


def worker_view(worker: WorkerInfo) -> dict[str, object]:
    """A live worker as ``/health`` lists it: its heartbeat fields, numbers as numbers and
    GPUs as a list."""
    view: dict[str, object] = {"id": worker.worker_id}
    for name, value in worker.fields.items():
        view[name] = _typed(name, value)
    if "gpus" in worker.fields:
        view["gpus"] = parse_gpus(worker.fields["gpus"])
    return view


def _typed(name: str, value: str) -> object:
    try:
        if name in _INTEGER_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
    except ValueError:
        pass  # a worker of another version: show what it wrote
    return value


def _health_scope(request: Request) -> str:
    scope = request.query_params.get("scope", "model")
    if scope not in HEALTH_SCOPES:
        choices = " or ".join(repr(s) for s in HEALTH_SCOPES)
        raise InvalidInput([{"loc": ["query", "scope"], "msg": f"scope must be {choices}", "type": "value_error"}])
    return scope


async def health(request: Request) -> Response:
    context = request.app.state.serving
    if _health_scope(request) == "api":
        # This process alone. No worker check: workers may be scaled to zero until this
        # API queues work. No Redis check: every API process shares it, and failing them
        # all while it is away would turn their 503 + Retry-After into refused connections.
        status = "draining" if context.draining else "ok"
        return JSONResponse({"status": status}, status_code=503 if context.draining else 200)
    try:
        workers, queued = await asyncio.wait_for(_read(context.queue), HEALTH_TIMEOUT_S)
    except (RedisUnavailable, asyncio.TimeoutError):
        return JSONResponse({"status": "unavailable", "redis": "unreachable", "workers": []}, status_code=503)
    ready = [w for w in workers if w.fields.get("state") in _READY_STATES]
    status = "draining" if context.draining else "ok" if ready else "no_ready_workers"
    return JSONResponse(
        {
            "status": status,
            "redis": "ok",
            "queued_inputs": queued,
            "ready_workers": len(ready),
            "workers": [worker_view(w) for w in workers],
        },
        status_code=200 if status == "ok" else 503,
    )


async def _read(queue: AsyncPredictionQueue) -> tuple[list[WorkerInfo], int]:
    await queue.ping()
    return await queue.workers(), await queue.queued_inputs()
