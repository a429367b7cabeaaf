"""The Kubernetes manifests as `kubectl kustomize` renders them (offline), and lookups in them."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests.support import ROOT
from tungstenkit.cli.commands import cli

DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
GPU_OVERLAY = DEPLOY / "overlays" / "gpu"
KUBECTL = shutil.which("kubectl")

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the manifests are rendered with `kubectl kustomize`"
)

Object = dict[str, Any]


@dataclass(frozen=True)
class Manifests:
    objects: tuple[Object, ...]

    def of_kind(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> Object:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def workloads(self) -> list[Object]:
        """Every object that runs pods."""
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def container(self, kind: str, name: str) -> Object:
        (container,) = self.one(kind, name)["spec"]["template"]["spec"]["containers"]
        return container  # type: ignore[no-any-return]

    def config(self) -> dict[str, str]:
        """The generated ConfigMap the API and the workers share."""
        (config,) = self.of_kind("ConfigMap")
        return config["data"]  # type: ignore[no-any-return]


@functools.cache
def render(directory: Path) -> Manifests:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return Manifests(tuple(o for o in yaml.safe_load_all(result.stdout) if o))


def env(container: Object) -> dict[str, Object]:
    return {e["name"]: e for e in container.get("env", [])}


def tungsten_command(args: list[str]) -> click.Context:
    """Parse ``args`` as the image's `tungsten` entrypoint would."""
    group = cli.make_context("tungsten", list(args), resilient_parsing=False)
    name, command, rest = cli.resolve_command(group, list(args))
    assert command is not None, f"unknown command {name}"
    return command.make_context(name, rest, parent=group)


def expand(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values."""
    for name, replacement in variables.items():
        value = value.replace(f"$({name})", replacement)
    return value
