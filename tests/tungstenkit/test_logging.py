"""Log formats: human lines, or one JSON object per line with the context fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tungstenkit._logging import add_log_context, configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "worker", "json")
    add_log_context(worker="host:1:abc")
    log = logging.getLogger("tungsten.test")
    log.info("Batch %d ran", 7, extra={"batch_id": 7, "prediction_ids": ["p1", "p2"]})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra={"prediction_id": "p1"})
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "Batch 7 ran" and first["level"] == "info" and first["process"] == "worker"
    assert first["batch_id"] == 7 and first["prediction_ids"] == ["p1", "p2"] and first["worker"] == "host:1:abc"
    assert first["logger"] == "tungsten.test" and first["time"].endswith("Z") and first["pid"] > 0
    assert second["prediction_id"] == "p1" and "ValueError: boom" in second["exception"]


def test_text_lines_stay_human(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "api")
    logging.getLogger("tungsten.test").warning("hello %s", "there")
    assert capsys.readouterr().err.rstrip().endswith("WARNING [api] tungsten.test: hello there")
