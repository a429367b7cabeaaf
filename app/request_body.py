"""Reading a request body: within the size limit, within the process's body budget, and
checked for its JSON shape while it arrives when it is large."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from tungstenkit.app.admission import BodyBudget
from tungstenkit.app.error_responses import ClientGone, PayloadTooLarge, UnsupportedMediaType
from tungstenkit.app.json_shape import JsonShapeGuard

#: Bodies up to this size are parsed as they are, on the event loop (that costs less than
#: handing them to a thread); larger ones are scanned while they arrive and validated on
#: the validation thread. Also the part of every body that the budget does not count.
LARGE_BODY_BYTES = 64 * 1024


class Body:
    """A request body held in memory and counted in the budget until ``release``."""

    __slots__ = ("_budget", "counted", "data")

    def __init__(self, budget: BodyBudget) -> None:
        self.data: bytes | bytearray = b""
        self.counted = 0
        self._budget = budget

    @property
    def large(self) -> bool:
        return len(self.data) > LARGE_BODY_BYTES

    def release(self) -> None:
        if self.counted:
            self._budget.give_back(self.counted)
            self.counted = 0
        # A new object rather than clearing in place: a validation thread may still read it.
        self.data = b""


def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json``.

    A web page may send any other type (``text/plain``, forms, none) to any server without
    asking it first (no CORS preflight): refusing them keeps other sites' pages from
    submitting predictions through a visitor's browser.
    """
    declared = request.headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() != "application/json":
        shown = f"'{declared}'" if declared else "none"
        raise UnsupportedMediaType(f"The body must be sent as Content-Type: application/json (got {shown})")


async def read_body(request: Request, limit: int, budget: BodyBudget, new_guard: Callable[[], JsonShapeGuard]) -> Body:
    """The request body: 413 past ``limit`` bytes, 503 when the process holds too many
    bytes of bodies already, and refused as soon as its JSON shape is out of bounds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}")
        budget.check_declared(int(declared))
    body = Body(budget)
    guard = None
    receive = request.receive  # directly: nothing else reads this body
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone("The client closed the connection before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                before = len(body.data)
                size = before + len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
                if size > budget.free_bytes:
                    body.counted += budget.take(before, size)
                if before:
                    if not isinstance(body.data, bytearray):
                        body.data = bytearray(body.data)
                    body.data += chunk
                else:
                    body.data = chunk
                if guard is not None:
                    guard.feed(chunk)
                elif size > LARGE_BODY_BYTES:
                    guard = new_guard()
                    guard.feed(body.data)
            if not message.get("more_body", False):
                return body
    except BaseException:
        body.release()
        raise
