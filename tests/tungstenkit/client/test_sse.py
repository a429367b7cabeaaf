"""The event-stream reader that ``stream()`` uses."""

from __future__ import annotations

from tungstenkit.client._sse import Event, EventParser


def test_events_are_split_on_blank_lines_and_comments_are_skipped() -> None:
    parser = EventParser()
    lines = [": keep-alive", "event: update", "id: 1", 'data: {"status":', 'data: "running"}', "", "", "data: x", ""]
    events = [event for event in map(parser.feed, lines) if event is not None]
    assert events == [Event("update", '{"status":\n"running"}', "1"), Event("message", "x", "1")]
