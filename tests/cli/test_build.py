"""`tungsten build` as users type it: every form of the folder, from a working directory of their own.

Standard output carries NAME:TAG alone; every failure is one `Error: ...` line. The image
itself, built by a real engine, is checked in tests/docker/.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support import tungsten

ECHO_MODEL = """
from tungstenkit import BaseIO, define_model


class Input(BaseIO):
    text: str


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output)
class Echo:
    def predict(self, inputs):
        return [Output(text=x.text) for x in inputs]
"""

#: No Docker engine answers here: the real client, pointed at a socket nobody listens on.
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A user's folder holding the model folder `mymodel/`."""
    folder = tmp_path / "work"
    (folder / "mymodel" / "sub").mkdir(parents=True)
    (folder / "mymodel" / "tungsten_model.py").write_text(textwrap.dedent(ECHO_MODEL))
    (folder / "mymodel" / "weights.txt").write_text("w\n")
    return folder


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"TUNGSTEN_HOME": str(tmp_path / "home")}


def _stored(env: dict[str, str], reference: str) -> Path:
    name, tag = reference.split(":")
    return Path(env["TUNGSTEN_HOME"]) / "models" / name / tag


def _one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", "a failed build prints no NAME:TAG"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and fragment in last, result.stderr
    return last


@pytest.mark.parametrize(
    ("where", "args"),
    [
        ("", ["mymodel"]),
        ("", ["./mymodel"]),
        ("mymodel", ["."]),
        ("mymodel", []),
        ("mymodel/sub", [".."]),
        ("", ["mymodel/tungsten_model.py"]),
    ],
    ids=["name", "dot-slash", "dot", "no-argument", "dot-dot", "file"],
)
def test_build_takes_every_form_of_the_folder(
    workspace: Path, env: dict[str, str], where: str, args: list[str]
) -> None:
    result = tungsten("build", *args, "--no-image", env=env, cwd=workspace / where)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"mymodel:[0-9a-f]{7}\n", result.stdout), result.stdout
    reference = result.stdout.strip()
    stored = _stored(env, reference)
    assert (stored / "files" / "tungsten_model.py").is_file() and (stored / "files" / "weights.txt").is_file()
    assert json.loads((stored / "model.json").read_text())["source"] == str(workspace / "mymodel")
    assert (stored / "Dockerfile").is_file()
    assert f"Stored {reference}" in result.stderr


def test_a_name_and_tag_can_be_given(workspace: Path, env: dict[str, str]) -> None:
    result = tungsten("build", "-n", "echo:v1", "--no-image", env=env, cwd=workspace / "mymodel")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo:v1\n"
    again = tungsten("build", "-n", "echo:v1", "--no-image", env=env, cwd=workspace / "mymodel")
    _one_line_error(again, "echo:v1 already exists")


@pytest.mark.parametrize(
    ("args", "where", "fragment"),
    [
        (["nothing-here"], "", "No model file or directory at"),
        (["mymodel/sub"], "", "No tungsten_model.py in"),
        ([], "", "No tungsten_model.py in"),
        (["mymodel", "-n", "Bad/Name"], "", "Invalid model name"),
        (["mymodel", "-c", "Nope"], "", "has no class Nope"),
    ],
    ids=["missing-folder", "no-model-file", "no-model-here", "bad-name", "missing-class"],
)
def test_build_failures_are_one_line(
    workspace: Path, env: dict[str, str], args: list[str], where: str, fragment: str
) -> None:
    _one_line_error(tungsten("build", *args, "--no-image", env=env, cwd=workspace / where), fragment)


def test_a_model_that_fails_to_import_is_one_line(workspace: Path, env: dict[str, str]) -> None:
    (workspace / "mymodel" / "tungsten_model.py").write_text("import a_module_that_does_not_exist\n")
    _one_line_error(tungsten("build", "--no-image", env=env, cwd=workspace / "mymodel"), "a_module_that_does_not_exist")


def test_an_unwritable_store_is_one_line(workspace: Path, tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("")
    result = tungsten("build", "mymodel", "--no-image", env={"TUNGSTEN_HOME": str(home)}, cwd=workspace)
    _one_line_error(result, "Cannot write the model store")


def test_without_an_engine_the_model_is_stored_and_the_image_skipped(workspace: Path, env: dict[str, str]) -> None:
    result = tungsten("build", "mymodel", env={**env, **NO_ENGINE}, cwd=workspace)
    assert result.returncode == 0, result.stderr
    reference = result.stdout.strip()
    assert re.fullmatch(r"mymodel:[0-9a-f]{7}", reference)
    assert "no Docker engine is reachable" in result.stderr
    assert f"docker build -t {reference} {_stored(env, reference)}" in result.stderr


def test_image_requires_an_engine_and_stores_nothing_without_one(workspace: Path, env: dict[str, str]) -> None:
    result = tungsten("build", "mymodel", "--image", env={**env, **NO_ENGINE}, cwd=workspace)
    _one_line_error(result, "--image needs a Docker engine, and none is reachable")
    assert not (Path(env["TUNGSTEN_HOME"]) / "models" / "mymodel").exists()
    assert tungsten("models", env=env).stdout.startswith("No models yet")


def test_no_image_does_not_ask_for_an_engine(workspace: Path, env: dict[str, str]) -> None:
    result = tungsten("build", "mymodel", "--no-image", env={**env, **NO_ENGINE}, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "--no-image" in result.stderr and "engine" not in result.stderr
