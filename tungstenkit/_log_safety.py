"""Making what clients send fit to be written into a log line.

A client chooses the text of its URLs, webhook targets and ids. Written raw, a control
character rewrites the terminal that shows the log (``\\x1b``), and a line break (``\\n``,
``\\x0b``, U+0085, U+2028) forges a line of its own; a URL's query string and user info
often carry a credential (a presigned token). Anything a client sent goes through
``printable`` before a log call, and URLs through ``url_for_log``.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

#: Longest client text written to one log line, in characters (a URL may be 2048 long).
MAX_LOGGED_CHARS = 2100


def printable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``str(value)`` with every non-printable character escaped, cut at ``limit`` characters.

    Escaped are the C0 and C1 controls, DEL, format characters, line and paragraph
    separators and every other character Python does not call printable (but the space),
    written as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``; a backslash is doubled, so an
    escape in the log always stands for the character, never for text the client typed.
    """
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def url_for_log(url: str) -> str:
    """``url`` without its user info, query and fragment (which may hold credentials), escaped.

    A query is shown as ``?...`` so that the reader knows there was one.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unusable URL still gets logged, cut the same way by hand
        rest = url.split("#", 1)[0]
        base, query, _ = rest.partition("?")
        scheme, sep, after = base.partition("://")
        if sep:
            netloc, slash, path = after.partition("/")
            base = f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"
        return printable(base + ("?..." if query else ""))
    netloc = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    return printable(shown + ("?..." if parts.query else ""))


class AccessLogQueryFilter(logging.Filter):
    """Cuts the query string off the request line of uvicorn's access log.

    A client's query string can hold a token: ``?webhook=https://hooks.example.com/in?token=...``.
    uvicorn logs ``(client, method, path with query, HTTP version, status)``; the path it
    logs is already percent-encoded, the query is what is left to cut.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?...", *args[3:])
        return True
