"""``GET /docs``: an interactive page for ``/openapi.json``, served from package data.

The page, its script and its style ship in ``app/static``: no CDN, so it works offline
and nothing but this server is contacted.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from tungstenkit.app.error_responses import NotFound

_ASSETS = {"docs.js": "text/javascript", "docs.css": "text/css"}
_HEADERS = {
    # Only this server: scripts, styles and requests; images also as data URIs (outputs).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return (resources.files("tungstenkit.app") / "static" / name).read_bytes()


async def docs_page(request: Request) -> Response:
    return Response(_read("docs.html"), media_type="text/html", headers=_HEADERS)


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:
        raise NotFound(f"No such asset: {name}")
    return Response(_read(name), media_type=_ASSETS[name], headers=_HEADERS)
