"""The Docker files, checked without a Docker engine (none runs here): parsed, not run."""

from __future__ import annotations

import re
import shutil
import subprocess

from typing import Any

import click
import pytest
import yaml

from tungstenkit.cli.commands import cli
from tests.support import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _expand(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _check_tungsten_command(args: list[str]) -> click.Context:
    """Parse the arguments exactly as the container's `tungsten` entrypoint would."""
    group_context = cli.make_context("tungsten", list(args), resilient_parsing=False)
    name, command, rest = cli.resolve_command(group_context, list(args))
    assert command is not None, f"unknown command {name}"
    return command.make_context(name, rest, parent=group_context)


def test_every_service_command_is_a_valid_tungsten_command(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service["build"] == "."
        context = _check_tungsten_command(service["command"])
        model = context.params["model"]
        assert (ROOT / model / "tungsten_model.py").is_file(), f"{name} serves a model the image lacks"
    assert compose["services"]["api"]["command"][0] == "serve"
    assert _check_tungsten_command(compose["services"]["api"]["command"]).params["workers"] == 0
    assert compose["services"]["worker"]["command"][0] == "worker"


def test_services_agree_on_the_redis_url_and_model(compose: dict[str, Any]) -> None:
    services = compose["services"]
    urls = {name: _expand(services[name]["environment"]["REDIS_URL"]) for name in ("api", "worker")}
    assert len(set(urls.values())) == 1
    url = urls["api"]
    redis_command = [_expand(str(part)) for part in services["redis"]["command"]]
    password = redis_command[redis_command.index("--requirepass") + 1]
    assert url == f"redis://:{password}@redis:6379/0"
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    models = {_check_tungsten_command(services[n]["command"]).params["model"] for n in ("api", "worker")}
    assert len(models) == 1  # same model, so the same Redis namespace


def test_the_worker_reserves_a_gpu_and_the_api_publishes_port_3000(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "3000:3000" in compose["services"]["api"]["ports"]
    assert _check_tungsten_command(compose["services"]["api"]["command"]).params["port"] == 3000


def test_the_dockerfile_installs_the_package_and_serves_on_3000() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tungsten"]' in dockerfile and "EXPOSE 3000" in dockerfile
    for package in ("tungstenkit", "app", "worker", "cli", "examples"):
        assert f"COPY {package}/ {package}/" in dockerfile
    examples_torch = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert examples_torch is not None and f"RUN pip install {examples_torch.group(1)}\n" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    _check_tungsten_command(yaml.safe_load(cmd.group(1)))


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file_where_compose_exists() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the docker client here has no compose plugin")
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerignore_keeps_the_venv_out() -> None:
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


