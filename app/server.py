"""Building the Starlette application for one served model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from tungstenkit._fetch import Allowlist
from tungstenkit._files import FilePolicy
from tungstenkit._model import ModelDefinition
from tungstenkit._queue import AsyncPredictionQueue, Keys, async_client, async_subscriber, close_async
from tungstenkit._settings import Settings, cors_origins
from tungstenkit.app.access import AccessControl
from tungstenkit.app.admission import BodyBudget
from tungstenkit.app.assets import asset
from tungstenkit.app.docs import docs_page
from tungstenkit.app.error_responses import EXCEPTION_HANDLERS
from tungstenkit.app.inputs import InputParser
from tungstenkit.app.openapi import build_openapi, openapi
from tungstenkit.app.prometheus import metrics
from tungstenkit.app.request_body import LARGE_BODY_BYTES
from tungstenkit.app.routes import ROUTES, ServingContext
from tungstenkit.app.waiters import CompletionWaiter

logger = logging.getLogger(__name__)

#: Seconds the API waits for Redis on any one call before answering 503.
REDIS_SOCKET_TIMEOUT_S = 5.0
#: Connections to Redis per API process (requests share them: see AsyncPredictionQueue).
REDIS_MAX_CONNECTIONS = 32

#: Operating the server: metrics, the API's description, its interactive page and the pages' files.
OPERATIONS_ROUTES = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    # The files of the demo page and of /docs (package data: the pages work offline).
    Route("/assets/{name}", asset, methods=["GET"]),
]


def model_metadata(definition: ModelDefinition, name: str, batch_size: int) -> dict[str, Any]:
    return {
        "name": name,
        "model_class": definition.name,
        "batch_size": batch_size,
        "input_schema": definition.input_schema(),
        "output_schema": definition.output_schema(),
        "demo_output_schema": definition.demo_output_cls.model_json_schema(),
    }


def _middleware(settings: Settings) -> list[Middleware]:
    """CORS for the listed origins; none (no layer at all) by default."""
    origins = cors_origins(settings.cors_origins)
    if not origins:
        return []
    # Never with credentials: the API uses no cookies, and an API key travels in a header
    # that a page's script sets itself.
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            expose_headers=["Retry-After"],
        )
    ]


def create_app(
    definition: ModelDefinition,
    settings: Settings,
    *,
    redis_url: str,
    namespace: str,
    model_name: str,
    batch_size: int | None = None,
) -> Starlette:
    """The API for ``definition``, queueing into the Redis at ``redis_url``."""
    batch_size = batch_size or definition.config.batch_size
    keys = Keys(namespace)
    # A blocking pool waits for a free connection rather than failing at once under load.
    client = async_client(
        redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout_s=REDIS_SOCKET_TIMEOUT_S, tls=settings.redis_tls
    )
    # Pub/sub waits indefinitely for messages, so it gets a client without a read timeout.
    subscriber = async_subscriber(redis_url, connect_timeout_s=REDIS_SOCKET_TIMEOUT_S, tls=settings.redis_tls)
    queue = AsyncPredictionQueue(
        client,
        keys,
        result_ttl_s=settings.result_ttl_s,
        max_queued_inputs=settings.max_queued_inputs,
        timeout_s=REDIS_SOCKET_TIMEOUT_S,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_s=settings.redis_wait_timeout_s,
        batch_size=batch_size,
    )
    serving = ServingContext(
        settings=settings,
        queue=queue,
        waiter=CompletionWaiter(subscriber, keys.done_channel, settings.result_ttl_s, keys.events_channel),
        parser=InputParser(definition.input_cls, settings.max_inputs_per_request, FilePolicy.from_settings(settings)),
        chunk_size=batch_size,
        metadata=model_metadata(definition, model_name, batch_size),
        webhook_allowlist=Allowlist.parse(settings.url_allowlist),
        bodies=BodyBudget(settings.max_buffered_bytes, LARGE_BODY_BYTES),
        access=AccessControl(queue) if settings.api_keys else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        listener = serving.waiter.start()
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await close_async(client)
            await close_async(subscriber)
            serving.validation.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=ROUTES + OPERATIONS_ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=_middleware(settings),
        lifespan=lifespan,
    )
    app.state.serving = serving
    app.state.openapi = build_openapi(definition, settings, model_name)
    return app
