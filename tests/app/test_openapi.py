"""``/openapi.json`` describes every endpoint with the model's own schemas; ``/docs`` works offline."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.support import EXAMPLES, MODELS, ROOT, Server, ServerFactory
from tungstenkit._settings import Settings
from tungstenkit._store import ModelStore
from tungstenkit.app.openapi import build_openapi
from tungstenkit.app.routes import ROUTES
from tungstenkit.app.server import OPERATIONS_ROUTES


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "files", workers=0)


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_endpoint_is_described(document: dict[str, Any]) -> None:
    served = {
        (route.path, method.lower())
        for route in ROUTES + OPERATIONS_ROUTES
        for method in route.methods or ()
        if method != "HEAD" and route.path != "/assets/{name}"  # the pages' files
    }
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == described
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_the_model_schemas_are_the_models_own(document: dict[str, Any]) -> None:
    body = document["paths"]["/predictions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    inputs = _resolve(document, body)
    assert (
        inputs["type"] == "array"
        and inputs["minItems"] == 1
        and inputs["maxItems"] == Settings().max_inputs_per_request
    )
    item = _resolve(document, inputs["items"])
    assert item["additionalProperties"] is False  # unknown fields are refused (422)
    hold = item["properties"]["hold"]
    assert (hold["minimum"], hold["maximum"], hold["default"]) == (0, 120, 0.0)
    image = item["properties"]["image"]["anyOf"][0]
    assert image["x-tungsten-file"] == "image" and image["contentMediaType"] == "image/*"
    assert "PNG, JPEG" in image["description"] and "URL" in image["description"]
    masked = _resolve(document, item["properties"]["masked"]["anyOf"][0])
    assert set(masked["required"]) == {"image", "mask"}
    prediction = _resolve(
        document,
        document["paths"]["/predictions/{prediction_id}"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ],
    )
    outputs = prediction["properties"]["outputs"]["anyOf"][0]
    output = _resolve(document, outputs["items"])
    assert set(output["properties"]) == {"echo", "by_field", "paths", "image_size", "mask", "mask_values"}
    assert "data URI" in _resolve(document, output["properties"]["echo"])["properties"]["image"]["items"]["description"]


def test_webhooks_are_documented_as_callbacks(document: dict[str, Any]) -> None:
    create = document["paths"]["/predictions"]["post"]
    assert {p["name"] for p in create["parameters"] if p["in"] == "query"} >= {"webhook", "webhook_events", "stream"}
    assert "output" in create["parameters"][1]["description"]
    callback = create["callbacks"]["webhook"]["{$request.query.webhook}"]["post"]
    assert "X-Tungsten-Signature" in {p["name"] for p in callback["parameters"]}


def test_the_submit_options_are_documented(document: dict[str, Any]) -> None:
    for path in ("/predictions", "/predict"):
        operation = document["paths"][path]["post"]
        where = {p["name"]: p["in"] for p in operation["parameters"]}
        assert where["Idempotency-Key"] == "header"
        assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]


def test_choices_bounds_and_descriptions_of_another_model() -> None:
    definition = ModelStore(Path("/nonexistent")).resolve(str(EXAMPLES / "image_filter"), None, None).load()
    document = build_openapi(definition, Settings(output_files="url"), "image_filter:latest")
    validate(document)
    schemas = document["components"]["schemas"]
    fields = schemas["Input"]["properties"]
    own = definition.input_schema()["properties"]
    assert fields["filter"]["enum"] == own["filter"]["enum"] == ["blur", "sharpen", "edges", "invert"]
    assert fields["filter"]["description"] == own["filter"]["description"]
    assert fields["image"]["description"].startswith(own["image"]["description"])
    assert "GET /files/{name}" in schemas["Output"]["properties"]["image"]["description"]


def test_model_classes_named_like_the_apis_own_schemas() -> None:
    from tungstenkit import BaseIO, Field, define_model

    class Prediction(BaseIO):
        text: str = Field(description="What to read")

    class Error(BaseIO):
        score: float

    @define_model(input=Prediction, output=Error)
    class Clash:
        def predict(self, inputs: list) -> list:
            return []

    definition = Clash.__tungsten_model__  # type: ignore[attr-defined]
    document = build_openapi(definition, Settings(), "clash")
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["Prediction"]["properties"]["text"]["description"] == "What to read"  # the model's own
    assert "status" in schemas["ApiPrediction"]["properties"]  # the API's, renamed
    body = document["paths"]["/predictions/{prediction_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/ApiPrediction"
    outputs = schemas["ApiPrediction"]["properties"]["outputs"]["anyOf"][0]["items"]
    assert outputs["$ref"] == "#/components/schemas/Error"


def test_docs_page_loads_from_this_server_only(server: Server) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(not re.match(r"^(https?:)?//", ref) for ref in links)
    references = re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', page.text)  # what the page loads
    assert len(references) >= 4
    for ref in references:
        if ref.startswith("data:"):
            continue  # inline (the empty favicon): nothing is fetched
        response = server.client.get(ref if ref.startswith("/") else "/" + ref)
        assert response.status_code == 200, ref
        if "swagger-ui" not in ref:  # ours; Swagger UI's own files are checked against the package's below
            assert not re.search(r"https?://", response.text), f"{ref} reaches out to the network"
    assert server.client.get("/assets/secrets.txt").status_code == 404
    assert server.client.get("/assets/..%2Fdocs.py").status_code == 404


def test_the_vendored_swagger_ui_is_the_packages_unchanged(server: Server) -> None:
    folder = ROOT / "app" / "static" / "vendor" / "swagger-ui"
    sums = dict(reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for name, digest in sums.items():
        served = server.client.get(f"/assets/{name}")
        assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == digest, name
        again = server.client.get(f"/assets/{name}", headers={"If-None-Match": served.headers["etag"]})
        assert again.status_code == 304 and not again.content  # revalidated, not sent again
    version = (folder / "VERSION").read_text().strip()
    assert f'PACKAGE_VERSION:"{version}"' in (folder / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_events_are_described(document: dict[str, Any]) -> None:
    events = document["paths"]["/predictions/{prediction_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {"Last-Event-ID", "last_event_id"} <= {p["name"] for p in events["parameters"]}
    get = document["paths"]["/predictions/{prediction_id}"]["get"]
    assert "text/event-stream" in get["responses"]["200"]["content"]
    prediction = document["components"]["schemas"]["Prediction"]["properties"]
    assert {"progress", "logs"} <= set(prediction)
