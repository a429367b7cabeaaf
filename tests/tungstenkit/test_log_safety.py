"""What clients send, made fit for a log line: escaped, and URLs without their secrets."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tungstenkit._log_safety import AccessLogQueryFilter, printable, url_for_log


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, spaces and ünïcödé ✓", "plain text, spaces and ünïcödé ✓"),
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("v\x0bt\x0cf\x00n\x7f", "v\\x0bt\\x0cf\\x00n\\x7f"),
        ("next\u0085line", "next\\x85line"),  # NEL, a C1 control
        ("\u2028line\u2029para", "\\u2028line\\u2029para"),
        ("zero\u200bwidth\u202eRTL", "zero\\u200bwidth\\u202eRTL"),
        ("no\u00a0break", "no\\xa0break"),
        ("already \\x1b escaped", "already \\\\x1b escaped"),  # typed by the client: not an escape
        ("\U000e0001tag", "\\U000e0001tag"),
    ],
)
def test_printable_escapes_what_is_not_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_cuts_long_text() -> None:
    assert printable("x" * 50, limit=10) == "x" * 10 + "..."


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_printable_text_is_one_printable_line(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable() and len(shown.splitlines()) <= 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example.com:8443/in?token=x", "https://hooks.example.com:8443/in?..."),
        ("http://hooks.example.com/in", "http://hooks.example.com/in"),
        (
            "https://b.s3.amazonaws.com/cat.png?X-Amz-Signature=abc&X-Amz-Credential=d",
            "https://b.s3.amazonaws.com/cat.png?...",
        ),
        ("http://[::1]:8080/a#frag", "http://[::1]:8080/a"),
        ("http://host/a\x1bb\x0bc\u0085d?token=t", "http://host/a\\x1bb\\x0bc\\x85d?..."),
        ("http://us:er@[::1/x?token=t", "http://[::1/x?..."),  # unparseable, cut by hand
        ("not a url?secret", "not a url?..."),
    ],
)
def test_urls_in_logs_lose_credentials_and_controls(url: str, shown: str) -> None:
    assert url_for_log(url) == shown


def test_the_access_log_shows_no_query_string() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/predictions?webhook=https%3A%2F%2Fh%2Fin%3Ftoken%3Dsecret", "1.1", 200),
        None,
    )
    assert AccessLogQueryFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /predictions?... HTTP/1.1" 200'
