"""The distribution as a user installs it: a wheel in a fresh virtual environment.

The package must not claim generic top-level module names: a model folder with its own
``app.py``, ``worker.py``, ``cli/`` or ``utils.py`` imports its own modules, and the
server still finds its own code and package data (``/docs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, wait_for
from tungstenkit._redis_server import free_port
from tungstenkit._runtime_wheel import PACKAGES

MODEL = """
import app
import utils
from cli.names import NAME
from worker import shout
from tungstenkit import BaseIO, define_model


class Input(BaseIO):
    text: str


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output)
class Echo:
    def setup(self):
        self.prefix = app.PREFIX + utils.SEPARATOR + NAME

    def predict(self, inputs):
        return [Output(text=self.prefix + shout(x.text)) for x in inputs]
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed; returns its bin folder."""
    folder = tmp_path_factory.mktemp("packaging")
    # From a copy of the sources alone: setuptools reuses a checkout's build/ folder, whose
    # leftovers would end up in the wheel.
    source = folder / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "results", "node_modules"),
    )
    wheels = folder / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("tungstenkit-*.whl")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    return venv / "bin"


def test_the_wheel_claims_no_generic_top_level_names(installed: Path) -> None:
    # Run away from the checkout, whose .egg-info would answer instead of the install.
    probe = (
        "import importlib.metadata as m, json; "
        "d = m.distribution('tungstenkit'); "
        "print(json.dumps(sorted({f.parts[0] for f in d.files if f.suffix == '.py'})))"
    )
    result = subprocess.run(
        [str(installed / "python"), "-c", probe], capture_output=True, text=True, check=True, cwd=installed
    )
    assert json.loads(result.stdout) == ["tungstenkit"]


def test_the_packages_of_pyproject_are_the_runtime_wheels() -> None:
    """The images' runtime wheel takes the same packages as pyproject.toml installs."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    assert set(PACKAGES) <= declared
    assert all(any(p == top or p.startswith(top + ".") for top in PACKAGES) for p in declared)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A model whose neighbours are named like the server's own packages."""
    folder = tmp_path / "shadowing"
    (folder / "cli").mkdir(parents=True)
    (folder / "tungsten_model.py").write_text(textwrap.dedent(MODEL))
    (folder / "app.py").write_text('PREFIX = "mine"\n')
    (folder / "utils.py").write_text('SEPARATOR = "/"\n')
    (folder / "worker.py").write_text("def shout(text):\n    return text.upper()\n")
    (folder / "cli" / "__init__.py").write_text("")
    (folder / "cli" / "names.py").write_text('NAME = "cli:"\n')
    return folder


@contextlib.contextmanager
def _serving(installed: Path, model: str, cwd: Path, tmp_path: Path) -> Iterator[str]:
    """The installed `tungsten serve MODEL`, run in ``cwd``; yields its URL once it is ready."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("TUNGSTEN_REDIS_URL", "REDIS_URL", "PYTHONPATH")}
    env["TUNGSTEN_HOME"] = str(tmp_path / "home")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed / "tungsten"), "serve", model, "-p", str(port), "--host", "127.0.0.1"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"tungsten serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 120, interval=0.1, what="the installed server to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(installed: Path, model_folder: Path, tmp_path: Path) -> Iterator[str]:
    # As a user types it: in the model folder, the folder given as `.`.
    with _serving(installed, ".", model_folder, tmp_path) as url:
        yield url


def test_a_tungstenkit_folder_in_the_working_directory_does_not_hide_the_package(
    installed: Path, model_folder: Path, tmp_path: Path
) -> None:
    """Serving from a checkout (or an image's source folder): its tungstenkit/ lacks the mapped
    app/, worker/ and cli/, and the server's processes must import the installed package."""
    checkout = installed.parent.parent / "source"
    assert (checkout / "tungstenkit").is_dir() and not (checkout / "tungstenkit" / "cli").exists()
    with _serving(installed, str(model_folder), checkout, tmp_path) as url:
        result = httpx.post(url + "/predict", json=[{"text": "hi"}], timeout=60)
        assert result.status_code == 200, result.text
        assert result.json()["outputs"] == [{"text": "mine/cli:HI"}]


def test_an_installed_server_runs_a_model_whose_modules_shadow_generic_names(served: str) -> None:
    docs = httpx.get(served + "/docs", timeout=10)
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert httpx.get(served + "/openapi.json", timeout=10).status_code == 200
    result = httpx.post(served + "/predict", json=[{"text": "hi"}], timeout=60)
    assert result.status_code == 200, result.text
    assert result.json()["outputs"] == [{"text": "mine/cli:HI"}]
