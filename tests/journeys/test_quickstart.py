"""The README's Quickstart, typed as written: `make serve`, then the two curl commands."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.journeys.readme import Shell, block_with, on_port
from tests.support import ROOT
from tungstenkit._redis_server import free_port


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    shell = Shell.for_user(ROOT, tmp_path / "home")
    yield shell
    shell.stop_all()


def test_make_serve_then_the_quickstart_requests(shell: Shell, tmp_path: Path) -> None:
    make_serve, make_test = block_with("make serve")
    assert make_serve.text.startswith("make serve") and make_test.text.startswith("make test")
    port = free_port()
    # `make serve PORT=N`, the README's way to another port (3000 may be taken here).
    command = make_serve.text.split("#")[0].strip() + f" PORT={port}"
    assert command == f"make serve PORT={port}"
    server = shell.start(command, tmp_path / "make-serve.log")
    shell.wait_ready(server, tmp_path / "make-serve.log", f"http://localhost:{port}")
    log = (tmp_path / "make-serve.log").read_text()
    assert f"Uvicorn running on http://0.0.0.0:{port} (Press CTRL+C to quit)" in log  # "on http://0.0.0.0:3000"
    assert "Serving the folder ./examples/text_to_image" in log

    post, get = block_with("curl -X POST http://localhost:3000/predictions")
    created = shell.run(on_port(post.text, port))
    assert created.returncode == 0, created.stderr
    assert set(json.loads(created.stdout)) == set(json.loads(post.shown)) == {"prediction_id"}
    prediction_id = json.loads(created.stdout)["prediction_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", prediction_id)  # 128 random bits, as the README's example

    example_id = json.loads(post.shown)["prediction_id"]
    assert example_id in get.text
    result = shell.run(on_port(get.text.replace(example_id, prediction_id), port))
    assert result.returncode == 0, result.stderr
    shown = get.shown.split(",...")[0]  # the README elides the timestamps
    expected_prefix = shown.split("...")[0]
    assert result.stdout.startswith(expected_prefix), result.stdout[:200]
    body = json.loads(result.stdout)
    assert (body["status"], body["error_message"], len(body["outputs"])) == ("success", None, 1)
    shell.stop(server)
