"""The files of the pages (the demo page at ``/``, the API docs at ``/docs``), from package data.

Everything a page loads comes from this server (``GET /assets/{name}``): no CDN, so the
pages work offline and contact nothing else. Files are sent with an ETag, so a browser
revalidates the 1.7 MB Swagger UI bundle instead of downloading it again.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from tungstenkit.app.error_responses import NotFound

#: Name in the URL: (path under ``app/static``, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "demo.js": ("demo.js", "text/javascript"),
    "demo.css": ("demo.css", "text/css"),
    "docs.js": ("docs.js", "text/javascript"),
    "docs.css": ("docs.css", "text/css"),
    "swagger-ui-bundle.js": ("vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("vendor/swagger-ui/swagger-ui.css", "text/css"),
}

#: Scripts, styles and requests from this server only. Images and media may also be data
#: and blob URIs (outputs, previews of files being sent), or links (``TUNGSTEN_PUBLIC_URL``).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def read(path: str) -> tuple[bytes, str]:
    """A file under ``app/static`` and its ETag."""
    data = (resources.files("tungstenkit.app") / "static" / path).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def static_response(request: Request, path: str, media_type: str) -> Response:
    data, etag = read(path)
    headers = {**PAGE_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound(f"No such asset: {name}")
    return static_response(request, *ASSETS[name])
