"""Fixtures of the tests against a real Docker engine: each image is built once per session."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker.support import Container, docker, remove_image, unavailable, unique
from tests.support import EXAMPLES, ROOT, tungsten

#: A small model without torch: echoes its text, holding it ``hold`` seconds (in steps that a
#: cancel interrupts) so that a prediction can be caught running.
SLOW_ECHO = """
import time

from tungstenkit import BaseIO, Field, Option, define_model


class Input(BaseIO):
    text: str = Field(description="What to echo")
    hold: float = Option(0.0, ge=0, le=60)


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output, batch_size=4)
class SlowEcho:
    def predict(self, inputs):
        deadline = time.monotonic() + max(x.hold for x in inputs)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return [Output(text=x.text.upper()) for x in inputs]
"""


@dataclass(frozen=True)
class Built:
    """A model that `tungsten build` stored and made an image of."""

    reference: str
    result: subprocess.CompletedProcess[str]
    env: dict[str, str]
    workspace: Path

    @property
    def name(self) -> str:
        return self.reference.split(":")[0]


@pytest.fixture(scope="session")
def engine() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(f"no Docker engine to test against: {reason}")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder holding the model folder `slowecho/`, and a model store of its own."""
    folder = tmp_path_factory.mktemp("docker-user")
    (folder / "slowecho").mkdir()
    (folder / "slowecho" / "tungsten_model.py").write_text(textwrap.dedent(SLOW_ECHO))
    return folder


@pytest.fixture(scope="session")
def echo_image(engine: None, workspace: Path) -> Iterator[Built]:
    """`tungsten build slowecho` run in the user's folder, with an engine reachable: the image is built."""
    reference = f"{unique('slowecho')}:v1"
    env = {"TUNGSTEN_HOME": str(workspace / "home")}
    result = tungsten("build", "slowecho", "-n", reference, env=env, cwd=workspace, timeout=1200)
    try:
        assert result.returncode == 0, result.stderr
        yield Built(reference, result, env, workspace)
    finally:
        remove_image(reference)


@pytest.fixture(scope="session")
def echo_container(echo_image: Built) -> Iterator[Container]:
    """`docker run --rm -p 3000:3000 NAME:TAG`, on a free port."""
    container = Container(echo_image.reference)
    try:
        container.wait_ready()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="session")
def text_to_image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The seed's example model (torch, ``gpu=False``), built in its parent folder by relative path."""
    home = tmp_path_factory.mktemp("docker-tti")
    reference = f"text-to-image:{unique('test')}"
    env = {"TUNGSTEN_HOME": str(home)}
    result = tungsten("build", "text_to_image", "-n", reference, env=env, cwd=EXAMPLES, timeout=1800)
    try:
        assert result.returncode == 0, result.stderr
        yield Built(reference, result, env, EXAMPLES)
    finally:
        remove_image(reference)


@pytest.fixture(scope="session")
def serving_image(engine: None) -> Iterator[str]:
    """The repository's own image (Dockerfile), as `docker compose` builds it."""
    reference = f"{unique('tktest-serving')}:latest"
    try:
        docker("build", "--force-rm", "-t", reference, str(ROOT), timeout=1800)
        yield reference
    finally:
        remove_image(reference)
