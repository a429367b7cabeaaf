"""The image `tungsten build` makes, run for real: `docker run --rm -p 3000:3000 NAME:TAG`."""

from __future__ import annotations

import re

import pytest

from tests.docker.conftest import Built
from tests.docker.support import Container, docker, remove_image, unique
from tests.support import tungsten, wait_for

pytestmark = pytest.mark.timeout(1800)  # the first test of a session builds the images


def test_build_by_relative_path_builds_the_image_and_prints_only_the_reference(echo_image: Built) -> None:
    assert echo_image.result.stdout == echo_image.reference + "\n"
    assert "Successfully tagged" in echo_image.result.stderr or "naming to" in echo_image.result.stderr
    assert f"Built the image {echo_image.reference}" in echo_image.result.stderr
    labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", echo_image.reference).stdout
    assert f'"tungsten.model":"{echo_image.reference}"' in labels


def test_the_container_serves_predictions(echo_container: Container) -> None:
    created = echo_container.client.post("/predictions", json=[{"text": "a"}, {"text": "b"}])
    assert created.status_code == 200, created.text
    prediction_id = created.json()["prediction_id"]
    body = echo_container.client.get(f"/predictions/{prediction_id}", params={"wait": 30}, timeout=40).json()
    assert body["status"] == "success" and body["outputs"] == [{"text": "A"}, {"text": "B"}]
    refused = echo_container.client.post("/predictions", json=[{"text": "a", "hodl": 1}])
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", 0, "hodl"]


def test_a_running_prediction_can_be_canceled(echo_container: Container) -> None:
    prediction_id = echo_container.client.post("/predictions", json=[{"text": "slow", "hold": 30}]).json()[
        "prediction_id"
    ]
    wait_for(lambda: echo_container.client.get(f"/predictions/{prediction_id}").json()["status"] == "running", 30)
    canceled = echo_container.client.post(f"/predictions/{prediction_id}/cancel")
    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["error_message"]) == ("failed", "Canceled")
    # The worker is free again at once: the batch was interrupted, not waited for.
    quick = echo_container.client.post("/predict", json=[{"text": "next"}], timeout=20).json()
    assert quick["status"] == "success"


def test_docs_health_and_the_models_own_name_and_namespace(echo_container: Container, echo_image: Built) -> None:
    docs = echo_container.client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert echo_container.client.get("/openapi.json").status_code == 200
    health = echo_container.client.get("/health")
    assert health.status_code == 200 and health.json()["ready_workers"] == 1
    assert health.json()["workers"][0]["model"] == echo_image.reference
    assert echo_container.client.get("/").json()["name"] == echo_image.reference
    # The namespace is the model's name: the embedded Redis's data folder is named after it.
    assert echo_container.exec("ls", "/var/lib/tungsten/redis").split() == [echo_image.name]
    assert f"Serving {echo_image.reference} (built " in echo_container.logs()


def test_the_processes_run_as_a_user_who_is_not_root(echo_container: Container) -> None:
    assert echo_container.exec("id", "-u").strip() != "0"
    assert echo_container.inspect()["Config"]["User"] == "tungsten"
    uids = [line.split()[0] for line in docker("top", echo_container.name, "-o", "uid,pid").stdout.splitlines()[1:]]
    assert uids and "0" not in uids, uids


def test_the_health_check_reports_healthy(echo_container: Container) -> None:
    def health() -> bool:
        state = echo_container.inspect()["State"]["Health"]
        assert state["Status"] != "unhealthy", state
        return state["Status"] == "healthy"

    wait_for(health, 60, interval=0.5, what="docker to report the container healthy")


def test_an_image_failure_says_the_model_was_stored(echo_image: Built) -> None:
    folder = echo_image.workspace / "failing"
    folder.mkdir()
    model = (echo_image.workspace / "slowecho" / "tungsten_model.py").read_text()
    model = model.replace(
        "@define_model(input=Input, output=Output, batch_size=4)",
        '@define_model(input=Input, output=Output, dockerfile_commands=["RUN exit 3"])',
    )
    (folder / "tungsten_model.py").write_text(model)
    reference = f"{unique('failing')}:v1"
    try:
        result = tungsten(
            "build", "failing", "-n", reference, env=echo_image.env, cwd=echo_image.workspace, timeout=900
        )
    finally:
        remove_image(reference)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"Error: The model was stored as {reference} (`tungsten serve {reference}` serves it), "
        "but its image failed to build: "
    ), last
    assert "returned a non-zero code: 3" in last and "to retry: docker build -t" in last
    assert reference.split(":")[1] in tungsten("models", env=echo_image.env).stdout
    assert docker("ps", "--all", "--quiet", "--filter", f"ancestor={reference}").stdout == ""


def test_the_seeds_docker_command_serves_the_example(text_to_image: Built) -> None:
    """`docker run --gpus 0 --rm -p 3000:3000 text-to-image:v1`, without `--gpus 0` on a host with no GPU."""
    gpus = ("--gpus", "0") if "nvidia" in docker("info", "--format", "{{json .Runtimes}}").stdout else ()
    container = Container(text_to_image.reference, run_options=("--rm", *gpus))
    try:
        container.wait_ready()
        assert "Uvicorn running on http://0.0.0.0:3000 (Press CTRL+C to quit)" in container.logs()
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        created = container.client.post(
            "/predictions",
            headers=headers,
            content='[{"prompt": "a professional photograph of an astronaut riding a horse"}]',
        )
        assert created.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", created.json()["prediction_id"])
        body = container.client.get(f"/predictions/{created.json()['prediction_id']}", params={"wait": 60}, timeout=70)
        assert body.json()["status"] == "success"
        assert body.json()["outputs"][0]["image"].startswith("data:image/png;base64,")
    finally:
        container.remove()


def test_a_cpu_model_gets_no_cuda_torch(text_to_image: Built) -> None:
    listing = docker("run", "--rm", "--entrypoint", "pip", text_to_image.reference, "list", "--format", "freeze").stdout
    packages = dict(line.split("==", 1) for line in listing.splitlines() if "==" in line)
    assert packages["torch"].startswith("2.13.0")
    assert not [name for name in packages if name.lower().startswith("nvidia")], sorted(packages)
    probe = "import torch; print(torch.version.cuda)"
    assert (
        docker("run", "--rm", "--entrypoint", "python", text_to_image.reference, "-c", probe).stdout.strip() == "None"
    )


def test_build_with_image_uses_the_engine(echo_image: Built) -> None:
    reference = f"{unique('forced')}:v1"
    try:
        result = tungsten(
            "build", "./slowecho", "--image", "-n", reference, env=echo_image.env, cwd=echo_image.workspace, timeout=900
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == reference + "\n"
        assert docker("image", "inspect", reference, check=False).returncode == 0
    finally:
        remove_image(reference)


def test_the_model_folder_is_the_working_directory(echo_container: Container, echo_image: Built) -> None:
    name, tag = echo_image.reference.split(":")
    assert echo_container.inspect()["Config"]["WorkingDir"] == f"/var/lib/tungsten/models/{name}/{tag}/files"
    assert "class SlowEcho" in echo_container.exec("cat", "tungsten_model.py")
