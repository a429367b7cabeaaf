"""`tungsten status`: workers, queue depth and throughput, from the Redis a server uses."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support import MODELS, ROOT, ServerFactory, tungsten, wait_for


def test_status_shows_workers_queue_and_throughput(serve: ServerFactory, redis_url: str) -> None:
    namespace = f"status{uuid.uuid4().hex[:8]}"
    server = serve(MODELS / "recorder", workers=2, namespace=namespace)
    for i in range(4):
        assert server.predict([{"x": i}])["status"] == "success"

    # Workers report what they ended with their heartbeats, once a second.
    def counted() -> subprocess.CompletedProcess[str] | None:
        shown = tungsten("status", "--redis-url", redis_url, "--namespace", namespace)
        assert shown.returncode == 0, shown.stderr
        return shown if "4 success" in shown.stdout else None

    out = wait_for(counted, 20, interval=0.2, what="the workers' counts").stdout
    assert namespace in out and "queued inputs: 0" in out
    header = next(line for line in out.splitlines() if line.startswith("WORKER"))
    assert header.split() == ["WORKER", "HOST", "PID", "MODEL", "STATE", "BATCH", "INPUTS/S", "LAST", "HEARTBEAT"]
    for worker in server.client.get("/health").json()["workers"]:
        row = next(line for line in out.splitlines() if line.startswith(worker["id"]))
        assert str(worker["pid"]) in row and "recorder" in row and "/4" in row
    assert "***" in out and redis_url.split("@")[0].split(":")[-1] not in out  # the password is hidden


def test_status_finds_every_namespace_of_a_redis(serve: ServerFactory, redis_url: str) -> None:
    namespace = f"status{uuid.uuid4().hex[:8]}"
    serve(MODELS / "recorder", namespace=namespace)
    shown = tungsten("status", "--redis-url", redis_url)
    assert shown.returncode == 0, shown.stderr
    assert namespace in shown.stdout


def test_status_finds_the_embedded_redis_of_a_running_serve(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", embedded_redis=True)
    url_file = serve.home / "redis" / "recorder" / "redis.url"
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600  # it holds the password
    shown = tungsten("status", env={"TUNGSTEN_HOME": str(serve.home), "TUNGSTEN_REDIS_URL": "", "REDIS_URL": ""})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("recorder") and "ready" in shown.stdout
    server.stop()
    assert not url_file.exists()
    gone = tungsten("status", env={"TUNGSTEN_HOME": str(serve.home), "TUNGSTEN_REDIS_URL": "", "REDIS_URL": ""})
    assert gone.returncode == 1
    assert "No running `tungsten serve`" in gone.stderr and "--redis-url" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_watch_refreshes_until_stopped(serve: ServerFactory, redis_url: str) -> None:
    namespace = f"status{uuid.uuid4().hex[:8]}"
    serve(MODELS / "recorder", namespace=namespace)
    shown = tungsten(
        "status", "--redis-url", redis_url, "--namespace", namespace, "--watch", "-n", "0.2", "--count", "3"
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("queued inputs:") == 3

    # Without --count it runs until interrupted, and Ctrl+C ends it cleanly. Ctrl+C as in
    # a terminal: a run started in the background (`cmd &` in a script) ignores SIGINT,
    # its children inherit that, and Python keeps it; a handler is not inherited.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tungstenkit.cli",
            "status",
            "--redis-url",
            redis_url,
            "--namespace",
            namespace,
            "-w",
            "-n",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    signal.signal(signal.SIGINT, ignored)
    with started as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            seen: list[bytes] = []

            def refreshed_twice() -> bool:
                seen.append(process.stdout.readline())  # type: ignore[union-attr]
                return sum(b"queued inputs" in line for line in seen) >= 2

            wait_for(refreshed_twice, 30, what="two refreshes")
            process.send_signal(signal.SIGINT)
            # Read what is left while it ends: a stdout pipe nobody drains fills up, and the
            # process would block flushing it at exit (the test's deadlock, not the command's).
            _, errors = process.communicate(timeout=30)
            assert process.returncode == 0
            assert b"Traceback" not in errors
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_status_without_any_redis_says_what_to_do(tmp_path: Path) -> None:
    shown = tungsten("status", env={"TUNGSTEN_HOME": str(tmp_path), "TUNGSTEN_REDIS_URL": "", "REDIS_URL": ""})
    assert shown.returncode == 1
    assert "pass --redis-url" in shown.stderr
    unreachable = tungsten(
        "status", "--redis-url", "redis://127.0.0.1:1/0", env={"TUNGSTEN_REDIS_CONNECT_TIMEOUT_S": "1"}
    )
    assert unreachable.returncode == 1
    assert "Cannot reach Redis" in unreachable.stderr and "Traceback" not in unreachable.stderr
