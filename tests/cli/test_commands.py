"""The `tungsten` command: store management, predict, and one-line errors."""

from __future__ import annotations

import json
import re
import socket
import zipfile
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.filesupport import FileServer, gradient_png
from tests.support import EXAMPLES, MODELS, tungsten
from tungstenkit._redis_server import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"TUNGSTEN_HOME": str(tmp_path / "home"), "TUNGSTEN_REDIS_CONNECT_TIMEOUT_S": "1"}


def _one_line_error(result, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and fragment in last, result.stderr


def test_build_models_tag_remove(env: dict[str, str]) -> None:
    built = tungsten("build", str(MODELS / "recorder"), "--no-image", env=env)
    assert built.returncode == 0, built.stderr
    reference = built.stdout.strip()
    assert re.fullmatch(r"recorder:[0-9a-f]{7}", reference)
    name, tag = reference.split(":")
    assert (Path(env["TUNGSTEN_HOME"]) / "models" / name / tag / "Dockerfile").is_file()
    listing = tungsten("models", env=env).stdout
    assert "recorder" in listing and "Recorder" in listing
    assert tungsten("tag", reference, "recorder:stable", env=env).stdout.strip() == "recorder:stable"
    assert tungsten("remove", reference, env=env).returncode == 0
    listing = tungsten("models", env=env).stdout
    assert "stable" in listing and reference.split(":")[1] not in listing


def test_the_build_context_holds_a_wheel_of_this_package(env: dict[str, str], tmp_path: Path) -> None:
    """What the image installs (the image itself is built and run in tests/docker/)."""
    built = tungsten("build", str(EXAMPLES / "text_to_image"), "-n", "text-to-image:v1", "--no-image", env=env)
    assert built.returncode == 0, built.stderr
    folder = tmp_path / "home" / "models" / "text-to-image" / "v1"
    assert (folder / "Dockerfile").is_file()
    # The image installs a wheel of this very package: code, package data and metadata.
    (wheel,) = (folder / "runtime").glob("tungstenkit-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    for packaged in (
        "tungstenkit/_queue/lua/submit.lua",
        "tungstenkit/app/static/docs.js",
        "tungstenkit/cli/commands.py",
        "tungstenkit/worker/model_worker.py",
        "tungstenkit/app/static/demo.js",
        "tungstenkit/client/_sync.py",
        "tungstenkit/app/static/vendor/swagger-ui/swagger-ui-bundle.js",
    ):
        assert packaged in names
    assert "tungsten = tungstenkit.cli.commands:main" in entry_points
    assert not any(n.endswith((".pyc", "/")) or "__pycache__" in n for n in names)
    # The same code makes the same bytes, so Docker reuses the layer that installs it.
    again = tungsten("build", str(EXAMPLES / "text_to_image"), "-n", "text-to-image:v2", "--no-image", env=env)
    assert again.returncode == 0, again.stderr
    (second,) = (folder.parent / "v2" / "runtime").glob("tungstenkit-*-py3-none-any.whl")
    assert second.read_bytes() == wheel.read_bytes()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "nothing-here:v9"], "No model nothing-here:v9"),
        (["serve"], "No models built yet"),
        (["serve", str(MODELS / "broken_import")], "a_module_that_does_not_exist"),
        (["serve", str(MODELS / "two_models")], "several models"),
        (["build", str(MODELS), "--no-image"], "No tungsten_model.py"),
        (["remove", "ghost:v1"], "No model ghost:v1"),
        (["serve", str(MODELS / "recorder"), "--redis-url", "redis://127.0.0.1:1/0"], "Cannot reach Redis at"),
    ],
)
def test_user_errors_are_one_line(env: dict[str, str], args: list[str], fragment: str) -> None:
    _one_line_error(tungsten(*args, env=env), fragment)


def test_port_in_use_is_one_line(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tungsten("serve", str(MODELS / "recorder"), "--host", "127.0.0.1", "-p", str(port), env=env)
    _one_line_error(result, f"127.0.0.1:{port}")


def test_setup_failure_stops_serve_with_a_message(env: dict[str, str], redis_url: str) -> None:
    result = tungsten(
        "serve",
        str(MODELS / "setup_fails"),
        "--redis-url",
        redis_url,
        "--host",
        "127.0.0.1",
        "-p",
        str(free_port()),
        env=env,
        timeout=60,
    )
    _one_line_error(result, "setup() failed")
    assert "RuntimeError: weights not found" in result.stderr


def test_unreachable_redis_stops_a_worker_with_a_message(env: dict[str, str]) -> None:
    result = tungsten("worker", str(MODELS / "recorder"), "--redis-url", "redis://127.0.0.1:1/0", env=env, timeout=120)
    assert result.returncode == 5
    assert "Cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_needs_a_redis_url(env: dict[str, str]) -> None:
    result = tungsten("worker", str(MODELS / "recorder"), env=env)
    assert result.returncode == 2 and "--redis-url" in result.stderr


def test_predict_runs_once_and_writes_files(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = tungsten(
        "predict", str(EXAMPLES / "text_to_image"), "-i", "prompt=a cat", "-i", "seed=7", "-o", str(out), env=env
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    with PILImage.open(output["image"]) as image:
        assert image.size == (256, 256)
    assert Path(output["image"]).parent == out


def test_predict_takes_local_files_and_guarded_urls(
    env: dict[str, str], tmp_path: Path, file_server: FileServer
) -> None:
    picture = tmp_path / "in.png"
    picture.write_bytes(gradient_png())
    out = tmp_path / "out"
    result = tungsten(
        "predict",
        str(EXAMPLES / "image_filter"),
        "-i",
        f"image={picture}",
        "-i",
        "filter=invert",
        "-o",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    output = Path(json.loads(result.stdout)["image"])
    assert output.parent == out
    with PILImage.open(output) as image, PILImage.open(picture) as original:
        assert image.size == (32, 24)
        assert image.getpixel((0, 0)) == tuple(255 - v for v in original.getpixel((0, 0)))
    url = file_server.add("/in.png", gradient_png())
    refused = tungsten(
        "predict", str(EXAMPLES / "image_filter"), "-i", f"image={file_server.url('/in.png', 'localhost')}", env=env
    )
    _one_line_error(refused, "Input 'image': localhost resolves to")
    allowed = tungsten(
        "predict",
        str(EXAMPLES / "image_filter"),
        "-i",
        f"image={url}",
        "-o",
        str(out),
        env={**env, "TUNGSTEN_URL_ALLOWLIST": f"127.0.0.1:{file_server.port}"},
    )
    assert allowed.returncode == 0, allowed.stderr
    assert file_server.requests == ["/in.png"]


def test_predict_reports_invalid_input(env: dict[str, str]) -> None:
    result = tungsten("predict", str(EXAMPLES / "text_to_image"), "-i", "seed=-1", env=env)
    _one_line_error(result, "Invalid input")


def test_predict_refuses_unknown_fields_as_the_api_does(env: dict[str, str]) -> None:
    result = tungsten("predict", str(MODELS / "recorder"), "-i", "x=1", "-i", "hodl=3", env=env)
    _one_line_error(result, "hodl")
