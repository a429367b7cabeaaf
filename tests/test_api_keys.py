"""API keys end to end: a real `tungsten serve` with TUNGSTEN_API_KEYS=on, keys made with `tungsten keys`."""

from __future__ import annotations

import base64
import io
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from openapi_spec_validator import validate
from PIL import Image as PILImage

from tests.support import MODELS, Server, ServerFactory, pace, tungsten, wait_for
from tungstenkit._settings import Settings
from tungstenkit._store import ModelStore
from tungstenkit.app.openapi import build_openapi
from tungstenkit.client import AccessDenied, Client


@dataclass
class Key:
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _create(redis_url: str, namespace: str, *options: str) -> Key:
    done = tungsten("keys", "create", "--redis-url", redis_url, "--namespace", namespace, *options)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("tk_") and "\n" not in token
    return Key(token.split("_")[1], token)


@dataclass
class Keyed:
    server: Server
    namespace: str
    redis_url: str
    alice: Key
    bob: Key
    reader: Key  # read-only, for alice's predictions
    admin: Key
    slow: Key  # 1 request per second
    small: Key  # 2 queued inputs at most


@pytest.fixture(scope="module")
def keyed(module_serve: ServerFactory, redis_url: str) -> Keyed:
    namespace = f"keys{uuid.uuid4().hex[:8]}"
    alice = _create(redis_url, namespace, "--name", "alice")
    keys = {
        "alice": alice,
        "bob": _create(redis_url, namespace, "--name", "bob"),
        "reader": _create(redis_url, namespace, "--name", "dashboard", "--scope", "read", "--owner", alice.id),
        "admin": _create(redis_url, namespace, "--name", "ops", "--scope", "admin"),
        "slow": _create(redis_url, namespace, "--name", "slow", "--rps", "1"),
        "small": _create(redis_url, namespace, "--name", "small", "--max-queued", "2"),
    }
    env = {"TUNGSTEN_API_KEYS": "on", "TUNGSTEN_METRICS_REQUIRE_KEY": "on", "TUNGSTEN_OUTPUT_FILES": "url"}
    server = module_serve(MODELS / "files", "--api-processes", "2", env=env, namespace=namespace)
    return Keyed(server, namespace, redis_url, **keys)


def _png() -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _submit(keyed: Keyed, key: Key, inputs: list[dict[str, Any]] | None = None) -> str:
    response = keyed.server.client.post("/predictions", json=inputs or [{}], headers=key.headers)
    assert response.status_code == 200, response.text
    return response.json()["prediction_id"]  # type: ignore[no-any-return]


def _fresh(keyed: Keyed, method: str, path: str, key: Key | None = None, **kwargs: Any) -> httpx.Response:
    """A request on a connection of its own, so that the kernel may give it to either API process."""
    with httpx.Client(base_url=keyed.server.url, timeout=30, headers=key.headers if key else {}) as client:
        return client.request(method, path, **kwargs)


def test_no_key_or_a_wrong_one_is_401_and_health_stays_open(keyed: Keyed) -> None:
    client = keyed.server.client
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {keyed.alice.token}"},
        {"Authorization": f"Bearer {keyed.alice.token[:-2]}xx"},
    ):
        response = client.post("/predictions", json=[{}], headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "detail" in response.json()
    assert client.get("/predictions/" + "a" * 32).status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=keyed.alice.headers).status_code == 403
    assert client.get("/metrics", headers=keyed.admin.headers).status_code == 200


def test_a_read_key_cannot_create_predictions(keyed: Keyed) -> None:
    response = keyed.server.client.post("/predictions", json=[{}], headers=keyed.reader.headers)
    assert response.status_code == 403
    assert "'read'" in response.json()["detail"]


def test_another_keys_prediction_is_not_found_and_an_admin_sees_all(keyed: Keyed) -> None:
    client = keyed.server.client
    prediction_id = _submit(keyed, keyed.alice, [{"image": _png()}])
    done = client.get(f"/predictions/{prediction_id}", params={"wait": 30}, headers=keyed.alice.headers).json()
    assert done["status"] == "success", done
    (link,) = done["outputs"][0]["echo"]["image"]
    assert client.get(link, headers=keyed.alice.headers).status_code == 200

    unknown = "0" * 32
    for path in (
        f"/predictions/{prediction_id}",
        f"/predictions/{prediction_id}?wait=5",
        f"/predictions/{prediction_id}/events",
    ):
        theirs = client.get(path, headers=keyed.bob.headers)
        nobodys = client.get(path.replace(prediction_id, unknown), headers=keyed.bob.headers)
        assert (theirs.status_code, nobodys.status_code) == (404, 404)
        assert theirs.json()["detail"] == nobodys.json()["detail"].replace(unknown, prediction_id)
    events = {**keyed.bob.headers, "Accept": "text/event-stream"}
    assert client.get(f"/predictions/{prediction_id}", headers=events).status_code == 404
    own = client.get(f"/predictions/{prediction_id}/events", headers=keyed.alice.headers)
    assert own.status_code == 200 and "event: completed" in own.text
    for method in ("GET", "POST"):
        assert (
            client.request(method, f"/predictions/{prediction_id}/cancel", headers=keyed.bob.headers).status_code == 404
        )
    theirs, nobodys = (client.get(path, headers=keyed.bob.headers) for path in (link, "/files/" + "A" * 32 + ".png"))
    assert (theirs.status_code, nobodys.status_code) == (404, 404)
    assert theirs.json()["detail"] == nobodys.json()["detail"].replace("A" * 32 + ".png", link.rsplit("/", 1)[1])

    assert client.get(f"/predictions/{prediction_id}", headers=keyed.reader.headers).json()["status"] == "success"
    assert client.get(link, headers=keyed.reader.headers).status_code == 200
    assert client.post(f"/predictions/{prediction_id}/cancel", headers=keyed.reader.headers).status_code == 403
    assert client.get(f"/predictions/{prediction_id}", headers=keyed.admin.headers).json()["status"] == "success"
    assert client.get(link, headers=keyed.admin.headers).status_code == 200


def test_the_owner_and_an_admin_may_cancel(keyed: Keyed) -> None:
    client = keyed.server.client
    mine = _submit(keyed, keyed.alice, [{"hold": 30}])
    assert client.get(f"/predictions/{mine}/cancel", headers=keyed.alice.headers).json()["error_message"] == "Canceled"
    theirs = _submit(keyed, keyed.bob, [{"hold": 30}])
    assert client.post(f"/predictions/{theirs}/cancel", headers=keyed.admin.headers).json()["status"] == "failed"


def test_a_key_past_its_rate_gets_429_with_retry_after(keyed: Keyed) -> None:
    answers = [keyed.server.client.get("/predictions/" + "0" * 32, headers=keyed.slow.headers) for _ in range(3)]
    assert answers[0].status_code == 404
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0].headers["retry-after"]) >= 1 and "requests per second" in limited[0].json()["detail"]


def test_queued_inputs_per_key_are_bounded_and_released_after_cancel_and_completion(keyed: Keyed) -> None:
    client = keyed.server.client
    held = _submit(keyed, keyed.small, [{"hold": 30}, {}])
    refused = client.post("/predictions", json=[{}], headers=keyed.small.headers)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
    assert _submit(keyed, keyed.alice)  # other keys are not held back
    client.post(f"/predictions/{held}/cancel", headers=keyed.small.headers)
    done = _submit(keyed, keyed.small, [{}, {}])
    assert (
        client.get(f"/predictions/{done}", params={"wait": 30}, headers=keyed.small.headers).json()["status"]
        == "success"
    )
    again = _submit(keyed, keyed.small, [{}, {}])  # released by the completion
    assert (
        client.get(f"/predictions/{again}", params={"wait": 30}, headers=keyed.small.headers).json()["status"]
        == "success"
    )


def test_the_owner_key_id_is_on_the_prediction(keyed: Keyed) -> None:
    prediction_id = _submit(keyed, keyed.alice)
    with redis.Redis.from_url(keyed.redis_url) as client:
        assert client.hget(f"tungsten:{{{keyed.namespace}}}:pred:{prediction_id}", "owner") == keyed.alice.id.encode()


def test_revoking_a_key_takes_effect_on_every_api_process_within_a_second(keyed: Keyed) -> None:
    doomed = _create(keyed.redis_url, keyed.namespace, "--name", "doomed")
    # Fresh connections reach both API processes: each has the key cached now.
    assert {_fresh(keyed, "GET", "/predictions/" + "0" * 32, doomed).status_code for _ in range(20)} == {404}
    done = tungsten("keys", "revoke", doomed.id, "--redis-url", keyed.redis_url, "--namespace", keyed.namespace)
    assert done.returncode == 0 and doomed.id in done.stdout, done.stderr
    pace(1.0)  # the bound under test: a second after the revocation
    assert {_fresh(keyed, "GET", "/predictions/" + "0" * 32, doomed).status_code for _ in range(20)} == {401}


def test_a_key_never_reaches_the_logs_or_redis_in_plain(keyed: Keyed) -> None:
    _submit(keyed, keyed.alice)
    keyed.server.client.post("/predictions", json=[{}], headers={"Authorization": "Bearer tk_0123456789abcdef_leaked"})
    secret = keyed.alice.token.split("_", 2)[2]
    assert secret not in keyed.server.log() and "leaked" not in keyed.server.log()
    with redis.Redis.from_url(keyed.redis_url) as client:
        for name in client.scan_iter(match=f"tungsten:{{{keyed.namespace}}}:*"):
            if client.type(name) == b"hash":
                assert all(secret.encode() not in v for v in client.hvals(name)), name


def test_keys_list_shows_limits_and_never_secrets(keyed: Keyed) -> None:
    done = tungsten("keys", "list", "--redis-url", keyed.redis_url, "--namespace", keyed.namespace)
    assert done.returncode == 0, done.stderr
    assert keyed.small.id in done.stdout and "alice" in done.stdout and "dashboard" in done.stdout
    for key in (keyed.alice, keyed.small, keyed.admin):
        assert key.token.split("_", 2)[2] not in done.stdout
    bad = tungsten("keys", "revoke", "f" * 16, "--redis-url", keyed.redis_url, "--namespace", keyed.namespace)
    assert bad.returncode == 1 and bad.stderr.strip() == f"Error: No API key {'f' * 16}"


def test_serve_warns_when_it_listens_beyond_loopback_without_keys(serve: ServerFactory) -> None:
    open_server = serve(MODELS / "files", "--host", "0.0.0.0", workers=0)
    wait_for(lambda: "Application startup complete" in open_server.log(), what="the API to start")
    assert "without API keys" in open_server.log()
    loopback = serve(MODELS / "files", workers=0)
    keyed = serve(MODELS / "files", "--host", "0.0.0.0", workers=0, env={"TUNGSTEN_API_KEYS": "on"})
    for server in (loopback, keyed):
        wait_for(lambda server=server: "Application startup complete" in server.log(), what="the API to start")
        assert "without API keys" not in server.log()
    assert "has none yet" in keyed.log()


def test_the_api_description_says_which_operations_need_a_key(keyed: Keyed) -> None:
    document = keyed.server.client.get("/openapi.json").json()
    validate(document)
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = document["paths"]
    for path, method in (
        ("/predictions", "post"),
        ("/predictions/{prediction_id}", "get"),
        ("/predictions/{prediction_id}/events", "get"),
        ("/predictions/{prediction_id}/cancel", "get"),
        ("/files/{name}", "get"),
        ("/metrics", "get"),
    ):
        operation = paths[path][method]
        assert operation["security"] == [{"apiKey": []}], path
        assert {"401", "403", "429"} <= set(operation["responses"]), path
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert "security" not in paths["/health"]["get"] and "security" not in paths["/"]["get"]


def test_without_keys_the_description_has_no_security() -> None:
    definition = ModelStore(Path("/nonexistent")).resolve(str(MODELS / "files"), None, None).load()
    document = build_openapi(definition, Settings(), "files")
    assert "securitySchemes" not in document["components"]
    assert all("security" not in op for item in document["paths"].values() for op in item.values())


def test_the_client_and_tungsten_predict_send_the_key(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNGSTEN_API_KEY", raising=False)
    png = base64.b64decode(_png().split(",", 1)[1])
    with Client(keyed.server.url, api_key=keyed.alice.token) as client:
        output = client.predict({"image": png})  # its output file is fetched with the key too
    assert output["echo"]["image"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Client(keyed.server.url) as client, pytest.raises(AccessDenied) as denied:
        client.submit({})
    assert denied.value.status_code == 401
    monkeypatch.setenv("TUNGSTEN_API_KEY", keyed.reader.token)
    with Client(keyed.server.url) as client, pytest.raises(AccessDenied) as denied:
        client.submit({})
    assert denied.value.status_code == 403

    done = tungsten(
        "predict",
        "--url",
        keyed.server.url,
        "-i",
        "hold=0",
        "-o",
        str(tmp_path),
        "--api-key",
        keyed.alice.token,
        env={"TUNGSTEN_API_KEY": ""},
    )
    assert done.returncode == 0, done.stderr
    refused = tungsten(
        "predict", "--url", keyed.server.url, "-i", "hold=0", "-o", str(tmp_path), env={"TUNGSTEN_API_KEY": ""}
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "401" in refused.stderr, refused.stderr


def test_the_rate_is_one_bucket_across_api_processes(keyed: Keyed) -> None:
    key = _create(keyed.redis_url, keyed.namespace, "--name", "one-per-second", "--rps", "1")
    started = time.monotonic()
    statuses = [_fresh(keyed, "GET", "/predictions/" + "0" * 32, key).status_code for _ in range(8)]
    elapsed = time.monotonic() - started
    # A burst of 1, then 1 more per whole second, whichever API process each connection
    # reached (a bucket per process would let one through on each).
    assert statuses[0] == 404 and statuses.count(404) <= 1 + int(elapsed), (statuses, elapsed)
    assert set(statuses) == {404, 429}


def test_the_synchronous_route_needs_the_predict_scope_too(keyed: Keyed) -> None:
    client = keyed.server.client
    assert client.post("/predict", json=[{}], headers=keyed.reader.headers).status_code == 403
    assert client.post("/predict", json=[{}]).status_code == 401
    done = client.post("/predict", json=[{}], headers=keyed.alice.headers)
    assert done.status_code == 200 and done.json()["status"] == "success"


def test_keys_need_a_namespace_where_several_models_share_the_redis(keyed: Keyed, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.xadd("tungsten:{another-model}:queue", {"x": "1"})  # a second model in this Redis
        try:
            done = tungsten("keys", "list", "--redis-url", redis_url, env={"TUNGSTEN_NAMESPACE": ""})
        finally:
            client.delete("tungsten:{another-model}:queue")
    assert done.returncode == 1 and done.stderr.startswith("Error: Several models found (")
    assert done.stderr.count("\n") == 1 and "--namespace" in done.stderr
