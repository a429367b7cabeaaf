"""Every statement of the user's serving document (shared/seed/serving-rest-api.md).

Run against the real `tungsten serve` subprocess and the example model of the seed.
"""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image as PILImage

from tests.support import EXAMPLES, Server, ServerFactory, tungsten, wait_for

SEED_PROMPT = "a professional photograph of an astronaut riding a horse"
HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
STATUSES = {"pending", "running", "success", "failed"}


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(EXAMPLES / "text_to_image")


def _png(data_uri: str) -> PILImage.Image:
    assert data_uri.startswith("data:image/png;base64,")
    return PILImage.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))


def test_post_predictions_with_the_seed_request_returns_a_prediction_id(server: Server) -> None:
    response = server.client.post("/predictions", headers=HEADERS, content=json.dumps([{"prompt": SEED_PROMPT}]))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["prediction_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["prediction_id"])  # 128 random bits


def test_get_prediction_reports_status_and_outputs(server: Server) -> None:
    prediction_id = server.client.post("/predictions", json=[{"prompt": SEED_PROMPT}]).json()["prediction_id"]
    seen = set()

    def finished() -> dict | None:
        body = server.client.get(f"/predictions/{prediction_id}", headers={"Accept": "application/json"}).json()
        seen.add(body["status"])
        return body if body["status"] in ("success", "failed") else None

    body = wait_for(finished, 60, what="the prediction to finish")
    assert seen <= STATUSES
    assert body["status"] == "success"
    assert body["error_message"] is None
    assert len(body["outputs"]) == 1 and list(body["outputs"][0]) == ["image"]
    assert _png(body["outputs"][0]["image"]).size == (256, 256)


def test_several_inputs_give_outputs_in_input_order(server: Server) -> None:
    inputs = [{"prompt": f"{SEED_PROMPT} number {i}", "seed": i % 2} for i in range(11)]
    together = server.predict(inputs)
    assert together["status"] == "success"
    alone = [server.predict([x])["outputs"][0] for x in inputs[:3]]
    assert together["outputs"][:3] == alone  # same input, same image, whatever the batch
    assert len({o["image"] for o in together["outputs"]}) == len(inputs)


def test_input_keys_are_the_input_class_field_names(server: Server) -> None:
    response = server.client.post("/predictions", json=[{"text": SEED_PROMPT}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", 0, "prompt"]


def test_cancel_answers_post_and_the_seed_get(server: Server) -> None:
    prediction_id = server.client.post("/predictions", json=[{"prompt": SEED_PROMPT}]).json()["prediction_id"]
    finished = server.result(prediction_id)
    assert finished["status"] == "success"
    # Canceling a finished prediction changes nothing, with either method.
    for method in ("POST", "GET"):
        response = server.client.request(method, f"/predictions/{prediction_id}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "success"
    assert server.result(prediction_id) == finished


def test_server_prints_where_it_listens(server: Server) -> None:
    assert f"Uvicorn running on http://127.0.0.1:{server.port} (Press CTRL+C to quit)" in server.log()


def test_serve_resolves_name_tag_name_and_latest(module_serve: ServerFactory) -> None:
    env = {"TUNGSTEN_HOME": str(module_serve.home)}
    built = tungsten("build", str(EXAMPLES / "text_to_image"), "-n", "text-to-image:v1", "--no-image", env=env)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == "text-to-image:v1"
    for reference in ("text-to-image:v1", "text-to-image", None):
        server = module_serve(reference, "--batch-size", "3", "--log-level", "warning")
        metadata = server.client.get("/").json()
        assert metadata["name"] == "text-to-image:v1"
        assert metadata["batch_size"] == 3  # --batch-size overrides the declared 8
        assert server.predict([{"prompt": SEED_PROMPT}])["status"] == "success"
        server.stop()
