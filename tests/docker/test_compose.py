"""`docker compose up`: Redis (append-only, on a volume) + the API + workers, run for real on CPUs.

The stack is the repository's docker-compose.yml alone, the README's one-liner for hosts
without NVIDIA GPUs, with the repository's own image. The tests run in order, on one stack.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import tomllib

from tests.docker.support import Compose, Container, compose_command, docker
from tests.support import ROOT, wait_for
from tungstenkit._redis_server import free_port

pytestmark = pytest.mark.timeout(1800)  # the first test of a session builds the image

SEED_PROMPT = "a professional photograph of an astronaut riding a horse"


@pytest.fixture(scope="module")
def stack(serving_image: str) -> Iterator[Compose]:
    compose = Compose(serving_image, free_port())
    try:
        compose("up", "--detach", "--no-build")
        compose.wait_workers(1)
        yield compose
    except BaseException:
        print(compose.logs())  # what the stack said, in the failure's report
        raise
    finally:
        compose.remove()


def _submit(compose: Compose, count: int, inputs: int = 4) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """POST ``count`` predictions of ``inputs`` prompts from 8 clients; returns the accepted ones and
    how many were refused (a 503 while Redis restarts is a refusal, not a loss)."""

    def post(i: int) -> tuple[str, list[dict[str, Any]]] | None:
        body = [{"prompt": f"prediction {i} input {j}", "seed": j} for j in range(inputs)]
        try:
            response = compose.client.post("/predictions", json=body, timeout=10)
        except httpx.TransportError:
            return None
        if response.status_code == 200:
            return response.json()["prediction_id"], body
        assert response.status_code in (429, 503), response.text
        return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(count)))
    accepted = dict(r for r in results if r is not None)
    return accepted, count - len(accepted)


def _all_succeed(compose: Compose, accepted: dict[str, list[dict[str, Any]]], timeout: float = 120) -> None:
    def ended(prediction_id: str) -> dict[str, Any] | None:
        try:
            response = compose.client.get(f"/predictions/{prediction_id}", params={"wait": 10}, timeout=20)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        return body if body["status"] in ("success", "failed") else None

    for prediction_id, inputs in accepted.items():
        body = wait_for(lambda p=prediction_id: ended(p), timeout, interval=0.2, what=f"prediction {prediction_id}")
        assert body["status"] == "success", body
        assert len(body["outputs"]) == len(inputs)


def test_predictions_succeed_on_cpus(stack: Compose) -> None:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    created = stack.client.post("/predictions", headers=headers, content=f'[{{"prompt": "{SEED_PROMPT}"}}]')
    assert created.status_code == 200
    body = stack.client.get(f"/predictions/{created.json()['prediction_id']}", params={"wait": 30}, timeout=40).json()
    assert body["status"] == "success" and body["outputs"][0]["image"].startswith("data:image/png;base64,")
    assert stack.client.get("/").json()["name"] == "text-to-image"
    assert stack.client.get("/docs").status_code == 200


def test_scaled_workers_all_run_batches(stack: Compose) -> None:
    stack("up", "--detach", "--no-build", "--scale", "worker=3")
    health = stack.wait_workers(3)
    assert len({w["host"] for w in health["workers"]}) == 3  # three containers

    def all_ran() -> bool:
        accepted, _ = _submit(stack, 24)
        _all_succeed(stack, accepted)
        workers = stack.health()["workers"]  # type: ignore[index]
        return len(workers) == 3 and all(int(w["batches"]) > 0 for w in workers)

    wait_for(all_ran, 180, interval=0.1, what="every worker to run batches")


def test_killing_a_worker_mid_load_loses_nothing(stack: Compose) -> None:
    stack.wait_workers(3)
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        load = background.submit(_submit, stack, 60)

        def busy_worker() -> str | None:
            for worker in stack.health()["workers"]:  # type: ignore[index]
                if int(worker["current_batch"]) > 0:
                    return str(worker["host"])
            return None

        host = wait_for(busy_worker, 60, interval=0.05, what="a worker running a batch")
        (container,) = [c for c in stack.containers("worker") if c.startswith(host)]
        docker("kill", container)
        accepted, refused = load.result()
    assert refused == 0
    _all_succeed(stack, accepted, timeout=180)


def test_restarting_redis_mid_load_loses_nothing(stack: Compose) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        load = background.submit(_submit, stack, 80)
        wait_for(lambda: (stack.health() or {}).get("queued_inputs", 0) > 0, 60, interval=0.05, what="a queue")
        stack("restart", "redis")
        accepted, _ = load.result()
    assert accepted
    _all_succeed(stack, accepted, timeout=180)


def test_down_then_up_keeps_accepted_predictions(stack: Compose) -> None:
    finished, _ = _submit(stack, 1)
    _all_succeed(stack, finished)
    stack("stop", "worker")
    pending, _ = _submit(stack, 1)
    (pending_id,) = pending
    assert stack.client.get(f"/predictions/{pending_id}").json()["status"] == "pending"
    stack("down")  # without -v: the Redis volume stays
    assert stack.health() is None
    stack("up", "--detach", "--no-build")
    stack.wait_workers(1)
    _all_succeed(stack, {**finished, **pending})


def test_the_default_files_give_each_worker_a_gpu(stack: Compose) -> None:
    """`docker compose up` reads docker-compose.override.yml too; the CPU one-liner leaves it out."""
    env = {k: v for k, v in {**os.environ, **stack.env}.items() if k != "COMPOSE_FILE"}
    merged = subprocess.run(
        [*compose_command(), "config"], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout
    assert re.search(r"worker:(.|\n)*driver: nvidia", merged)
    alone = stack("config").stdout
    assert "nvidia" not in alone


def test_the_image_holds_the_pinned_torch_and_runs_as_a_user(serving_image: str) -> None:
    pin = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["examples"]
    (torch_pin,) = [p for p in pin if p.startswith("torch==")]
    shown = docker("run", "--rm", "--entrypoint", "pip", serving_image, "show", "torch").stdout
    version = re.search(r"^Version: (\S+)", shown, re.MULTILINE)
    assert version is not None and version.group(1).split("+")[0] == torch_pin.split("==")[1]
    assert docker("run", "--rm", "--entrypoint", "id", serving_image, "-u").stdout.strip() != "0"
    # The package is installed, not left as sources in the working directory.
    assert docker("run", "--rm", "--entrypoint", "ls", serving_image).stdout.split() == ["examples"]


def test_the_image_alone_serves_the_example_with_an_embedded_redis(serving_image: str) -> None:
    """The Dockerfile's own claim: `docker run --rm -p 3000:3000 tungsten-serving`, like `make serve`."""
    container = Container(serving_image, run_options=("--rm",))
    try:
        container.wait_ready()
        result = container.client.post("/predict", json=[{"prompt": "a yellow star"}], timeout=60).json()
        assert result["status"] == "success"
        assert container.client.get("/").json()["name"] == "text-to-image"
    finally:
        container.remove()
