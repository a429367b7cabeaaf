"""The API process of ``tungsten serve``: uvicorn serving the Starlette app."""

from __future__ import annotations

import uvicorn

from app.server import create_app
from tungstenkit._logging import configure_logging
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource


def run_api(
    source: ModelSource,
    settings: Settings,
    *,
    redis_url: str,
    namespace: str,
    host: str,
    port: int,
    log_level: str,
    batch_size: int | None,
) -> None:
    configure_logging(log_level, "api")
    definition = source.load()
    app = create_app(
        definition,
        settings,
        redis_url=redis_url,
        namespace=namespace,
        model_name=source.reference,
        batch_size=batch_size,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Access lines cost a measurable share of the API's CPU: only when asked for.
        access_log=log_level in ("debug", "trace"),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
