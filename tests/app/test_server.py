"""Cross-origin requests (CORS): refused unless the operator lists the origins, and then
never with credentials."""

from __future__ import annotations

import pytest

from tests.support import MODELS, Server, ServerFactory

APP = "https://app.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "recorder", env={"TUNGSTEN_CORS_ORIGINS": f"{APP}, http://localhost:8080"}, workers=0)


def test_a_listed_origin_may_call_the_api_from_a_browser(server: Server) -> None:
    preflight = server.client.options("/predictions", headers={"Origin": APP, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    response = server.client.post("/predictions", json=[{"x": 1}], headers={"Origin": APP})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_an_origin_not_listed_gets_no_cors_headers(server: Server) -> None:
    preflight = server.client.options("/predictions", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = server.client.post("/predictions", json=[{"x": 1}], headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_is_off_by_default(module_serve: ServerFactory) -> None:
    server = module_serve(MODELS / "recorder", workers=0)
    preflight = server.client.options("/predictions", headers={"Origin": APP, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = server.client.post("/predictions", json=[{"x": 1}], headers={"Origin": APP})
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
