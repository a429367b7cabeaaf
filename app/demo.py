"""``GET /``: the demo page for a browser, the model's metadata for everyone else.

A browser asks for ``text/html`` first; curl, httpx and the clients ask for ``*/*`` or
``application/json`` and keep getting the seed's JSON. The page (``app/static/demo.*``)
builds its form from that JSON's ``input_schema``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tungstenkit.app.assets import static_response

_HTML = ("text/html", "application/xhtml+xml")


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header puts HTML strictly before JSON (a tie keeps the JSON)."""
    html = json = 0.0
    wildcard = 0.0
    for item in (accept or "").split(","):
        media_type, *parameters = item.split(";")
        media_type = media_type.strip().lower()
        quality = _quality(parameters)
        if media_type in _HTML:
            html = max(html, quality)
        elif media_type == "application/json":
            json = max(json, quality)
        elif media_type in ("*/*", "application/*"):
            wildcard = max(wildcard, quality)
    return html > max(json, wildcard)


async def root(request: Request) -> Response:
    if prefers_html(request.headers.get("accept")):
        response = static_response(request, "demo.html", "text/html")
    else:
        response = JSONResponse(request.app.state.serving.metadata)
    response.headers["Vary"] = "Accept"
    return response
