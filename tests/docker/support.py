"""Helpers for the tests against a real Docker engine: the engine, containers, compose projects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, wait_for
from tungstenkit._docker import engine_problem

#: The base images the product's Dockerfiles start from.
BASE_IMAGES = ("python:3.11-slim", "redis:7.2-alpine")
#: The script that starts an engine and makes the base images where no registry is reachable
#: (idempotent, as root); $TUNGSTEN_DOCKER_SANDBOX names another.
SANDBOX = Path(os.environ.get("TUNGSTEN_DOCKER_SANDBOX", ROOT.parent / "shared" / "tools" / "docker-sandbox.sh"))


def docker(
    *args: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    return result


def unavailable() -> str | None:
    """None when an engine answers and has the base images; else why the Docker tests cannot run.

    Where the sandbox script is present (and we are root), it is run first: it is
    idempotent, quick when all is ready, and starts the engine when it is not running.
    """
    problem = _problem()
    if problem is None or not SANDBOX.is_file() or os.geteuid() != 0:
        return problem
    started = subprocess.run([str(SANDBOX)], capture_output=True, text=True, timeout=1800, check=False)
    if started.returncode != 0:
        last = (started.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{problem}, and {SANDBOX} could not start one ({last})"
    return _problem()


def _problem() -> str | None:
    problem = engine_problem()
    if problem is not None:
        return problem
    missing = [image for image in BASE_IMAGES if docker("image", "inspect", image, check=False).returncode != 0]
    return f"the base images {', '.join(missing)} are missing" if missing else None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_image(reference: str) -> None:
    docker("image", "rm", "--force", reference, check=False)


class Container:
    """A detached container whose port 3000 is published on a free loopback port."""

    def __init__(self, image: str, *args: str, run_options: tuple[str, ...] = ()) -> None:
        self.name = unique("tktest")
        docker("run", "--detach", "--name", self.name, "--publish", "127.0.0.1::3000", *run_options, image, *args)
        port = docker("port", self.name, "3000/tcp").stdout.split()[0].rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.name).stdout)[0]  # type: ignore[no-any-return]

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command).stdout

    def wait_ready(self, timeout: float = 180) -> None:
        def ready() -> bool:
            if not self.inspect()["State"]["Running"]:
                raise AssertionError(f"the container stopped:\n{self.logs()}")
            try:
                return self.client.get("/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout, interval=0.2, what=f"{self.name} to be ready")

    def remove(self) -> None:
        self.client.close()
        docker("rm", "--force", "--volumes", self.name, check=False)


class Compose:
    """A compose project of the repository's docker-compose.yml, on CPUs (the file alone)."""

    def __init__(self, image: str, port: int) -> None:
        self.project = unique("tktest").replace("-", "")
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            # The CPU one-liner of the README: the file alone, without the GPU override.
            "COMPOSE_FILE": str(ROOT / "docker-compose.yml"),
            "COMPOSE_PROJECT_NAME": self.project,
            "TUNGSTEN_IMAGE": image,
            "TUNGSTEN_PORT": str(port),
            "REDIS_PASSWORD": uuid.uuid4().hex,
        }
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = compose_command() + list(args)
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            cwd=ROOT,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).stdout.split()

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.client.get("/health", timeout=3)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    def wait_workers(self, count: int, timeout: float = 180) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            health = self.health()
            return health if health is not None and health["ready_workers"] == count else None

        return wait_for(ready, timeout, interval=0.3, what=f"{count} ready workers")

    def logs(self) -> str:
        result = self("logs", "--no-color", "--tail", "200", check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        self.client.close()
        self("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where it is installed, else v1 (`docker-compose`)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("neither `docker compose` nor `docker-compose` is installed")
