"""The REST API's examples in the README, typed as written against `tungsten serve` (a free port for 3000)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.journeys.readme import Shell, block_with, on_port
from tests.support import ROOT, wait_for
from tungstenkit._redis_server import free_port


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    shell = Shell.for_user(ROOT, tmp_path / "home")
    yield shell
    shell.stop_all()


def _serve(shell: Shell, command: str, tmp_path: Path) -> int:
    port = free_port()
    log = tmp_path / "serve.log"
    server = shell.start(f"{command} -p {port}", log)
    shell.wait_ready(server, log, f"http://localhost:{port}")
    return port


def test_the_tungstenkit_docs_requests_work_as_written(shell: Shell, tmp_path: Path) -> None:
    post, get, cancel = block_with("curl -X 'POST' 'http://localhost:3000/predictions'")
    port = _serve(shell, "tungsten serve examples/text_to_image", tmp_path)
    created = shell.run(on_port(post.text, port))
    assert created.returncode == 0, created.stderr
    prediction_id = json.loads(created.stdout)["prediction_id"]

    def finished() -> dict | None:
        result = shell.run(on_port(get.text.replace("39c9eb6b", prediction_id), port))
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["status"] in ("pending", "running", "success", "failed")
        return body if body["status"] in ("success", "failed") else None

    body = wait_for(finished, 60, interval=0.2, what="the prediction to end")
    assert body["status"] == "success" and body["error_message"] is None
    assert body["outputs"][0]["image"].startswith("data:image/png;base64,")
    canceled = shell.run(on_port(cancel.text.replace("39c9eb6b", prediction_id), port))
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "success"  # canceling a finished prediction changes nothing


def test_the_image_filter_example(shell: Shell, tmp_path: Path) -> None:
    serve, post = block_with("tungsten serve examples/image_filter")
    try:
        socket.getaddrinfo("picsum.photos", 443)
    except OSError as exc:
        pytest.skip(f"the example's input image is on picsum.photos, which cannot be resolved here ({exc})")
    port = _serve(shell, serve.text, tmp_path)
    result = shell.run(on_port(post.text, port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(post.shown.split("...")[0]), result.stdout[:300]
    assert json.loads(result.stdout)["status"] == "success"
