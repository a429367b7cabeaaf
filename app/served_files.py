"""``GET /files/{name}``: output files stored in Redis when ``output_files=url``."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from tungstenkit.app.access import authorize
from tungstenkit.app.error_responses import NotFound

#: What ``worker.outputs.new_file_name`` produces: 32 URL-safe characters and an extension.
_NAME = re.compile(r"[A-Za-z0-9_-]{32}(\.[A-Za-z0-9]{1,10})?")
#: Types a browser may show inline; anything else is sent as a download, so that a
#: model's HTML or SVG output never runs as a page on the API's origin.
_INLINE = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "audio/", "video/")


async def get_file(request: Request) -> Response:
    caller = await authorize(request, "read")
    name = request.path_params["name"]
    if not _NAME.fullmatch(name):
        raise NotFound(f"File {name} not found")
    found = await request.app.state.serving.queue.fetch_file(name)
    # A file of another owner's prediction is as unknown as its prediction.
    if found is None or (caller is not None and not caller.may_see(found[2])):
        raise NotFound(f"File {name} not found (it expires with its prediction)")
    mime_type, data, _ = found
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, max-age=300",
    }
    if not mime_type.startswith(_INLINE):
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=mime_type, headers=headers)
