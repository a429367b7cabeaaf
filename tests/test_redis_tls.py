"""An external Redis over TLS (``rediss://``): a redis-server with a certificate made in the
test, which asks for a client certificate, and `tungsten serve` reaching it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sentinel.replicas import SentinelSet
from tests.support import MODELS, ServerFactory, tungsten, wait_for
from tests.tlssupport import Certificates, TlsRedis, make_certificates, tls_redis
from tests.webhooksupport import webhook_receiver
from tungstenkit._redis_server import free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def redis_tls(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    with tls_redis(certs, tmp_path_factory.mktemp("tls-redis"), auth_clients="yes") as server:
        yield server


def _tls_env(certs: Certificates, ca: Path | None = None, client: bool = True) -> dict[str, str]:
    env = {"TUNGSTEN_REDIS_CA_FILE": str(ca or certs.ca), "TUNGSTEN_REDIS_CONNECT_TIMEOUT_S": "2"}
    if client:
        env |= {
            "TUNGSTEN_REDIS_CERT_FILE": str(certs.cert("client")),
            "TUNGSTEN_REDIS_KEY_FILE": str(certs.key("client")),
        }
    return env


def test_serve_runs_predictions_and_webhooks_through_a_tls_redis(
    serve: ServerFactory, certs: Certificates, redis_tls: TlsRedis
) -> None:
    serve.redis_url = redis_tls.url
    env = {**_tls_env(certs), "TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*"}
    server = serve(MODELS / "recorder", env=env)
    with webhook_receiver() as receiver:
        created = server.client.post("/predictions", params={"webhook": receiver.url}, json=[{"x": 7}, {"x": 8}])
        prediction_id = created.json()["prediction_id"]
        result = server.result(prediction_id)  # long-polls: the API's subscriber is on TLS too
        assert result["status"] == "success" and [o["x"] for o in result["outputs"]] == [7, 8]
        held = server.client.post("/predictions", json=[{"x": 1, "hold": 30}]).json()["prediction_id"]
        assert server.client.post(f"/predictions/{held}/cancel").status_code == 200
        assert server.result(held)["status"] == "failed"
        wait_for(lambda: receiver.events() == [(prediction_id, "completed")], 30, what="the webhook")
    shown = tungsten("status", "--redis-url", redis_tls.url, env=_tls_env(certs))
    assert shown.returncode == 0, shown.stderr
    assert "recorder" in shown.stdout and "ready" in shown.stdout
    assert redis_tls.password not in server.log() + shown.stdout + shown.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "wrong CA",
            "is not trusted: self-signed certificate in certificate chain (a CA of its certificate goes in TUNGSTEN_REDIS_CA_FILE)",
        ),
        ("no client certificate", "(does it want a client certificate? TUNGSTEN_REDIS_CERT_FILE)"),
        ("missing CA file", "TUNGSTEN_REDIS_CA_FILE: no such file"),
        ("not rediss", "is set, but the Redis URL redis://***@127.0.0.1"),
        ("embedded", "the embedded Redis needs none"),
    ],
)
def test_tls_mistakes_end_in_one_error_line(
    case: str, expected: str, certs: Certificates, redis_tls: TlsRedis, tmp_path: Path
) -> None:
    url = redis_tls.url
    env = _tls_env(certs)
    if case == "wrong CA":
        env = _tls_env(certs, ca=certs.other_ca)
    elif case == "no client certificate":
        env = _tls_env(certs, client=False)
    elif case == "missing CA file":
        env = _tls_env(certs, ca=tmp_path / "nowhere.pem")
    elif case == "not rediss":
        url = url.replace("rediss://", "redis://")
    command = ["serve", str(MODELS / "recorder"), "-p", str(free_port()), "--host", "127.0.0.1", "--workers", "1"]
    if case != "embedded":
        command += ["--redis-url", url]
    done = tungsten(
        *command, env={**env, "TUNGSTEN_HOME": str(tmp_path / "home"), "REDIS_URL": "", "TUNGSTEN_REDIS_URL": ""}
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert "Traceback" not in done.stderr and redis_tls.password not in done.stderr


def test_serve_follows_a_failover_of_sentinels_and_primary_speaking_tls(
    serve: ServerFactory, certs: Certificates, tmp_path: Path
) -> None:
    sentinels = SentinelSet(tmp_path / "sentinel", replicas=1, tls=certs)
    try:
        sentinels.start()
        assert sentinels.url.startswith("rediss+sentinel://")
        serve.redis_url = sentinels.url
        server = serve(MODELS / "recorder", env=_tls_env(certs))
        assert server.predict([{"x": 1}])["status"] == "success"
        old = sentinels.kill_primary()
        sentinels.wait_new_primary(old)

        def accepted() -> str | None:
            response = server.client.post("/predictions", json=[{"x": 2}])
            return response.json()["prediction_id"] if response.status_code == 200 else None

        prediction_id = wait_for(accepted, 60, interval=0.2, what="the API on the new primary")
        assert server.result(prediction_id, wait=60)["status"] == "success"
    finally:
        sentinels.stop()
