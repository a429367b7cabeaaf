"""``tungsten demo``: serves the model and prints the address of its demo page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import EXAMPLES, ROOT, wait_for
from tungstenkit._redis_server import free_port


def test_demo_serves_the_model_and_prints_the_pages_address(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "TUNGSTEN_HOME": str(tmp_path / "home")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tungstenkit.cli",
                "demo",
                str(EXAMPLES / "noop"),
                "-p",
                str(port),
                "--redis-url",
                redis_url,
                "--namespace",
                f"demo{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        address = f"http://127.0.0.1:{port}/"
        wait_for(
            lambda: f"Demo page: {address}" in log.read_text() or process.poll() is not None,
            timeout=60,
            what="the demo page's address",
        )
        assert process.poll() is None, log.read_text()
        # Printed once the model is ready: the page works at once.
        assert httpx.get(address + "health").json()["status"] == "ok"
        page = httpx.get(address, headers={"Accept": "text/html"})
        assert page.status_code == 200 and "assets/demo.js" in page.text
        assert httpx.post(address + "predict", json=[{"text": "hi"}]).json()["outputs"] == [{"text": "hi"}]
        assert log.read_text().count("Demo page:") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
