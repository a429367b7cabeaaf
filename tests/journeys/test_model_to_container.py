"""The README's way from a model folder to a container, typed in the model folder as written.

Liberties: a free port for 3000, and a unique tag for `v1` (images are the machine's).
"""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docker.support import docker, remove_image, unavailable
from tests.journeys.readme import Shell, block_with, on_port
from tungstenkit._redis_server import free_port

MODEL = """
from tungstenkit import BaseIO, define_model


class Input(BaseIO):
    text: str


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output)
class Shout:
    def predict(self, inputs):
        return [Output(text=x.text.upper() + "{suffix}") for x in inputs]
"""


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    (tmp_path / "mymodel").mkdir()
    (tmp_path / "mymodel" / "tungsten_model.py").write_text(textwrap.dedent(MODEL).replace("{suffix}", "!"))
    shell = Shell.for_user(tmp_path, tmp_path / "home")
    yield shell
    shell.stop_all()


def _shout(url: str) -> str:
    response = httpx.post(url + "/predict", json=[{"text": "hi"}], timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["outputs"][0]["text"])


@pytest.mark.timeout(1800)  # with an engine, `tungsten build` builds the image
def test_from_the_model_folder_to_a_container(shell: Shell, tmp_path: Path) -> None:
    cd, build, serve, run = block_with("tungsten build -n mymodel:v1")
    tag = f"v1-{uuid.uuid4().hex[:8]}"
    reference = f"mymodel:{tag}"
    engine = unavailable() is None

    assert cd.text == "cd mymodel"
    shell.run(cd.text)
    try:
        built = shell.run(build.text.replace("mymodel:v1", reference), timeout=1500)
        assert built.returncode == 0, built.stderr
        assert built.stdout.strip() == build.shown.replace("mymodel:v1", reference)  # NAME:TAG, alone
        assert (f"Built the image {reference}" if engine else "Skipped the image") in built.stderr

        # Edited after the build: the stored model does not change.
        (shell.cwd / "tungsten_model.py").write_text(textwrap.dedent(MODEL).replace("{suffix}", "?"))
        port = free_port()
        log = tmp_path / "serve.log"
        server = shell.start(on_port(serve.text.replace("mymodel:v1", reference), port), log)
        shell.wait_ready(server, log, f"http://localhost:{port}")
        assert _shout(f"http://localhost:{port}") == "HI!"
        assert re.search(rf"Serving {re.escape(reference)} \(built \d{{4}}-\d\d-\d\dT", log.read_text())
        assert httpx.get(f"http://localhost:{port}/").json()["name"] == reference
        shell.stop(server)

        # The folder as it is now: `tungsten serve .`, and `./mymodel` from its parent.
        for where, model, shown in ((shell.cwd, ".", str(shell.cwd)), (tmp_path, "./mymodel", "./mymodel")):
            folder_log = tmp_path / f"serve-{model.strip('./') or 'dot'}.log"
            folder_shell = Shell(where, shell.env)
            folder_server = folder_shell.start(f"tungsten serve {model} -p {port}", folder_log)
            try:
                folder_shell.wait_ready(folder_server, folder_log, f"http://localhost:{port}")
                assert _shout(f"http://localhost:{port}") == "HI?"
                assert f"Serving the folder {shown}" in folder_log.read_text()
            finally:
                folder_shell.stop(folder_server)

        if not engine:
            pytest.skip(f"`{run.text}` needs a Docker engine: {unavailable()}")
        container_log = tmp_path / "docker-run.log"
        container = shell.start(on_port(run.text.replace("mymodel:v1", reference), port), container_log)
        shell.wait_ready(container, container_log, f"http://localhost:{port}")
        assert _shout(f"http://localhost:{port}") == "HI!"  # the same snapshot
        assert httpx.get(f"http://localhost:{port}/").json()["name"] == reference
        shell.stop(container)
    finally:
        if engine:
            remove_image(reference)
            assert docker("ps", "--all", "--quiet", "--filter", f"ancestor={reference}").stdout == ""
