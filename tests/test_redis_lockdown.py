"""The embedded Redis locked down: each process of `tungsten serve` logs in as a user of its
own, allowed only what it uses, and a whole run (predictions, output files, cancels,
failures, webhooks, a worker killed, metrics, status) needs nothing more."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import redis

from tests.support import MODELS, Server, ServerFactory, descendants, tungsten, wait_for
from tests.webhooksupport import webhook_receiver
from tungstenkit._redis_server import embedded_redis_dir

ENV = {
    "TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*",
    "TUNGSTEN_WEBHOOK_SECRET": "lockdown-secret",
    "TUNGSTEN_OUTPUT_FILES": "url",
    "TUNGSTEN_WEBHOOK_BACKOFF_S": "1",
    # A killed worker's entries are taken over within a few seconds.
    "TUNGSTEN_HEARTBEAT_TTL_S": "3",
}
BINARY = "data:application/octet-stream;base64," + base64.b64encode(b"locked down").decode()


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "files", embedded_redis=True, workers=2, env=ENV)


@pytest.fixture(scope="module")
def admin(server: Server, module_serve: ServerFactory) -> Iterator[redis.Redis]:
    """The embedded Redis as its admin."""
    client = _admin(module_serve.home, "files")
    yield client
    client.close()


def _admin(home: Path, namespace: str) -> redis.Redis:
    """A client of the embedded Redis of ``namespace`` as its admin, from the URL `tungsten
    serve` leaves for `tungsten status`."""
    return redis.Redis.from_url(
        (embedded_redis_dir(home, namespace) / "redis.url").read_text().strip(), decode_responses=True
    )


def _denied(admin: redis.Redis) -> list[tuple[str, str, str, str]]:
    """What Redis refused since its ACL log was last reset: (user, why, what, where)."""
    return [(e["username"], e["reason"], e["object"], e["context"]) for e in admin.acl_log()]


@contextmanager
def _nothing_denied(home: Path, namespace: str) -> Iterator[redis.Redis]:
    """The admin of the embedded Redis of ``namespace``; Redis must refuse nothing meanwhile."""
    admin = _admin(home, namespace)
    try:
        admin.acl_log_reset()
        yield admin
        assert _denied(admin) == []
    finally:
        admin.close()


def _role(pid: int) -> str | None:
    """Which child of `tungsten serve` process ``pid`` is (None: another, or gone)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((part.decode() for part in command if part in (b"_api", b"worker", b"_webhooks")), None)


def _child_urls(server: Server) -> dict[str, str]:
    """The Redis URL each child process of ``server`` was given, by its role."""
    urls = {}
    for pid in descendants(server.process.pid):
        role = _role(pid)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        url = next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"TUNGSTEN_REDIS_URL=")), None)
        if role and url:
            urls[role] = url
    return urls


def test_every_process_logs_in_as_its_own_user(server: Server) -> None:
    urls = _child_urls(server)
    assert {role: urlsplit(url).username for role, url in urls.items()} == {
        "_api": "api",
        "worker": "worker",
        "_webhooks": "webhooks",
    }
    passwords = {unquote(urlsplit(url).password or "") for url in urls.values()}
    assert len(passwords) == 3 and "" not in passwords
    # Secrets never reach the log.
    log = server.log()
    assert not any(password in log for password in passwords)


def test_the_default_user_is_disabled(server: Server, admin: redis.Redis) -> None:
    (default,) = [rule for rule in admin.acl_list() if rule.startswith("user default ")]
    assert " off " in default and "#" not in default and "nopass" not in default  # no way to log in as it
    address = urlsplit(_child_urls(server)["_api"]).path
    anonymous = redis.Redis(unix_socket_path=address)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    # Nor does the password of a user work without its name, as the single password did.
    password = unquote(urlsplit(_child_urls(server)["_api"]).password or "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=address, password=password).ping()
    anonymous.close()


def test_the_api_user_cannot_touch_the_rest_of_redis(server: Server, admin: redis.Redis) -> None:
    admin.set("tungsten:{another}:queued", "7")
    admin.set("unrelated", "x")
    api = redis.Redis.from_url(_child_urls(server)["_api"])
    try:
        for command in (
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "GET", "*"),
            ("KEYS", "*"),
            ("SHUTDOWN", "NOSAVE"),
            ("ACL", "LIST"),
            ("MONITOR",),
            ("SCAN", "0"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                api.execute_command(*command)
        for key in ("tungsten:{another}:queued", "unrelated", "rq:queues"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                api.get(key)
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.publish("tungsten:{another}:done", "x")
        # A script runs with its caller's rights: a key it builds is checked too.
        with pytest.raises(redis.ResponseError, match="can't access"):
            api.evalsha(api.script_load("return redis.call('GET', 'tungsten:{another}:' .. 'queued')"), 0)
        api.hget("tungsten:{files}:pred:0", "result")  # its own namespace: allowed
    finally:
        api.close()
    assert admin.get("tungsten:{another}:queued") == "7" and admin.get("unrelated") == "x"
    admin.delete("tungsten:{another}:queued", "unrelated")
    admin.acl_log_reset()


def test_a_whole_run_needs_nothing_the_users_may_not_do(
    server: Server, admin: redis.Redis, module_serve: ServerFactory
) -> None:
    admin.acl_log_reset()
    with webhook_receiver(fail_first=1) as receiver:  # a retry through RQ's scheduler too
        hooks = {"webhook": receiver.url, "webhook_events": "start,completed"}
        created = server.client.post("/predictions", params=hooks, json=[{"binary": BINARY}, {"binary": BINARY}])
        prediction_id = created.json()["prediction_id"]
        result = server.result(prediction_id)
        assert result["status"] == "success"
        link = result["outputs"][0]["echo"]["binary"][0]
        assert server.client.get(link).content == b"locked down"
        failed = server.client.post("/predictions", params=hooks, json=[{"fail": True}]).json()["prediction_id"]
        assert server.result(failed)["status"] == "failed"
        held = server.client.post("/predictions", params=hooks, json=[{"hold": 30}]).json()["prediction_id"]
        wait_for(lambda: server.client.get(f"/predictions/{held}").json()["status"] == "running", 30)
        assert server.client.post(f"/predictions/{held}/cancel").status_code == 200
        assert server.result(held)["status"] == "failed"
        expected = {(p, e) for p in (prediction_id, failed, held) for e in ("start", "completed")}
        wait_for(lambda: set(receiver.events()) == expected, 30, what="the webhooks")

    # Deliveries waiting their turn at a busy receiver (two at once per receiver in each
    # webhook process): RQ schedules them again.
    with webhook_receiver(hang=True) as hanging:
        for _ in range(6):
            assert server.client.post("/predictions", params={"webhook": hanging.url}, json=[{}]).status_code == 200
        wait_for(lambda: len(hanging.arrived) >= 4, 30, what="the receiver to hold four deliveries")
        hanging.release.set()
        wait_for(lambda: len(hanging.deliveries) == 6, 60, what="every delivery to the released receiver")

    # Workers killed mid-batch: the supervisor releases their entries, and the workers
    # it starts again take them over.
    slow = server.client.post("/predictions", json=[{"hold": 1}]).json()["prediction_id"]
    wait_for(lambda: server.client.get(f"/predictions/{slow}").json()["status"] == "running", 30)
    for worker in server.client.get("/health").json()["workers"]:
        os.kill(int(worker["pid"]), signal.SIGKILL)
    assert server.result(slow, wait=60)["status"] == "success"

    # Processes stopping cleanly: a worker hands back what it holds and leaves the
    # registry, a webhook worker leaves RQ's.
    stopping = [pid for pid in descendants(server.process.pid) if _role(pid) in ("worker", "_webhooks")]
    for pid in stopping:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not any(_role(pid) for pid in stopping), 60, what="the processes to stop")
    server.wait_ready(workers=2)
    assert server.predict([{"binary": BINARY}])["status"] == "success"

    metrics = server.client.get("/metrics")
    assert metrics.status_code == 200 and "tungsten_queued_inputs" in metrics.text
    assert server.client.get("/health").status_code == 200
    shown = tungsten(
        "status",
        "--webhook-secret",
        env={"TUNGSTEN_HOME": str(module_serve.home), "TUNGSTEN_REDIS_URL": "", "REDIS_URL": ""},
    )
    assert shown.returncode == 0, shown.stderr
    assert _denied(admin) == []


def test_api_keys_idempotency_and_deadlines_need_nothing_more(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", embedded_redis=True, env={"TUNGSTEN_API_KEYS": "on"})
    url = (embedded_redis_dir(serve.home, "recorder") / "redis.url").read_text().strip()
    with _nothing_denied(serve.home, "recorder"):
        created = tungsten(
            "keys",
            "create",
            "--redis-url",
            url,
            "--namespace",
            "recorder",
            "--name",
            "a",
            "--rps",
            "100",
            "--max-queued",
            "10",
        )
        assert created.returncode == 0, created.stderr
        headers = {"Authorization": f"Bearer {created.stdout.strip()}", "Idempotency-Key": "once"}
        first = server.client.post("/predictions", json=[{"x": 1}], headers=headers)
        again = server.client.post("/predictions", json=[{"x": 1}], headers=headers)
        assert first.status_code == 200 and again.json() == first.json()
        done = server.client.get(f"/predictions/{first.json()['prediction_id']}", params={"wait": 30}, headers=headers)
        assert done.json()["status"] == "success"
        # The one worker is busy for a second: a prediction with a deadline of 0.2 s expires.
        keyed = {"Authorization": headers["Authorization"]}
        assert server.client.post("/predictions", json=[{"x": 2, "hold": 1}], headers=keyed).status_code == 200
        late = server.client.post("/predictions", params={"deadline_s": 0.2}, json=[{"x": 3}], headers=keyed)
        assert late.status_code == 200, late.text
        ended = server.client.get(f"/predictions/{late.json()['prediction_id']}", params={"wait": 30}, headers=keyed)
        assert ended.json()["status"] == "failed" and "Deadline" in ended.json()["error_message"]


def test_streaming_events_and_their_webhooks_need_nothing_more(serve: ServerFactory) -> None:
    server = serve(MODELS / "streaming", embedded_redis=True, env={"TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*"})
    with _nothing_denied(serve.home, "streaming"), webhook_receiver() as receiver:
        hooks = {"webhook": receiver.url, "webhook_events": "output,logs,completed"}
        # Steps 0.8 s apart: output and logs webhooks share one 500 ms window per
        # prediction, and one not delivered before the prediction ends is skipped (its
        # `completed` carries the final state); so the first step's logs webhook may hold
        # back its output, which then goes out with the second step's.
        created = server.client.post("/predictions", params=hooks, json=[{"prompt": "a", "steps": 3, "delay": 0.8}])
        prediction_id = created.json()["prediction_id"]
        with server.client.stream(
            "GET", f"/predictions/{prediction_id}/events", headers={"Accept": "text/event-stream"}, timeout=60
        ) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("event: ")]
        assert lines[0] == "event: queued" and "event: output" in lines and lines[-1] == "event: completed"
        wait_for(lambda: (prediction_id, "completed") in receiver.events(), 30, what="the completed webhook")
        assert {event for _, event in receiver.events()} >= {"output", "completed"}
