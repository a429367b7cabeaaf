"""``GET /docs``: Swagger UI on ``/openapi.json``, vendored, so the page works offline.

Why Swagger UI and not our own explorer any more. Our page (judged good by a new user)
rendered what the API used at the time: JSON bodies, path and query parameters, image
previews. It showed descriptions as plain text, so the Markdown that OpenAPI descriptions
are written in (backticks, lists, links) came out literally, and each feature the API
grows would need the page to grow with it: headers (``Idempotency-Key``), security schemes
(API keys: an "Authorize" button), ``text/event-stream`` responses, callbacks, examples,
``oneOf`` bodies. A hand-written renderer falls behind the document without anyone
noticing; Swagger UI implements the OpenAPI 3.1 specification, renders CommonMark
(sanitised), and is maintained by people whose job that is. What we gave up: inline
previews of output images in this page (the demo page at ``/`` shows outputs by type).

The files are ``swagger-ui-dist`` from npm, unchanged (``app/static/vendor/swagger-ui``:
version, licence, hashes checked by a test; ``make vendor-swagger-ui`` refreshes them).
``docs.js`` starts it with the validator badge off (it would call validator.swagger.io)
and nothing loaded from elsewhere; the page's Content-Security-Policy allows only this
server.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tungstenkit.app.assets import static_response


async def docs_page(request: Request) -> Response:
    return static_response(request, "docs.html", "text/html")
