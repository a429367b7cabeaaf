"""The compose files, parsed: what holds without a Docker engine. tests/docker/ runs them for real."""

from __future__ import annotations

import re
from typing import Any

import click
import pytest
import yaml

from tests.support import ROOT
from tungstenkit.cli.commands import cli


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


def test_the_override_reserves_a_gpu_and_the_api_publishes_port_3000(compose: dict[str, Any]) -> None:
    override = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())
    devices = override["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "deploy" not in compose["services"]["worker"]  # the CPU one-liner: docker-compose.yml alone
    assert [_expand(p) for p in compose["services"]["api"]["ports"]] == ["3000:3000"]
    assert _check_tungsten_command(compose["services"]["api"]["command"]).params["port"] == 3000


def test_dockerignore_keeps_the_venv_out() -> None:
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()
