"""The Redis users of the embedded Redis (``tungstenkit/_queue/_acl.py``), against a real
redis-server."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import redis

from tungstenkit._queue import Keys
from tungstenkit._queue._acl import SCRIPTS, Role, commands, script_commands, users
from tungstenkit._redis_server import RedisServer


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=False, users=users(Keys("m*[x]?")))
    server.start()
    yield server
    server.stop()


def test_every_script_belongs_to_a_role_and_every_command_it_calls_is_found() -> None:
    folder = resources.files("tungstenkit._queue") / "lua"
    shared = {"common", "fence", "readd", "admission"}  # put in front of the scripts that use them
    names = {p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua")} - shared
    assert names == {name for role in SCRIPTS.values() for name in role}
    for name in names:
        source = (folder / f"{name}.lua").read_text()
        calls = re.findall(r"redis\.p?call\(\s*([^,)]+)", source)
        # Each call names its command literally, but for finish.lua's files_do, whose
        # callers name it (and are read too).
        assert all(call.startswith("'") for call in calls if call != "command"), (name, calls)
    assert {"EXPIRE", "DEL"} <= script_commands("finish")


def test_a_role_may_run_what_its_scripts_call() -> None:
    for role, names in SCRIPTS.items():
        for name in names:
            assert script_commands(name) <= set(commands(role)), (role, name)
    assert "XADD" in commands(Role.API) and "XREADGROUP" not in commands(Role.API)
    assert "XREADGROUP" in commands(Role.WORKER) and "BLMOVE" not in commands(Role.WORKER)


#: The module of each role's Redis calls (every call lives in ``tungstenkit/_queue``).
_MODULES = {
    Role.API: "_prediction_queue.py",
    Role.WORKER: "_worker_queue.py",
    Role.WEBHOOKS: "_webhook_events.py",
}
#: redis-py methods whose command is not their name in capitals.
_METHOD_COMMANDS = {"delete": "DEL", "xpending_range": "XPENDING", "scan_iter": "SCAN"}
#: Names of the clients and pipelines those modules call.
_RECEIVERS = {"self._redis", "pipe", "client"}


def _commands_called(module: str) -> set[str]:
    """The Redis commands the code of ``module`` sends, read from its redis-py calls."""
    tree = ast.parse((resources.files("tungstenkit._queue") / module).read_text())
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        if ast.unparse(node.func.value) not in _RECEIVERS or not hasattr(redis.Redis, method):
            continue
        if method in ("pipeline", "execute", "close", "pubsub"):
            continue
        if method == "execute_command":
            found.add(ast.literal_eval(node.args[0]).upper())
        elif method.split("_")[0] in ("xgroup", "xinfo", "script", "client"):
            found.add(method.upper().replace("_", "|", 1))
        else:
            found.add(_METHOD_COMMANDS.get(method, method.upper()))
    return found


def test_every_command_a_role_s_code_sends_is_granted() -> None:
    """A command added to a role's module without its ACL would fail only with the
    embedded Redis (the other tests use a Redis that allows everything)."""
    for role, module in _MODULES.items():
        called = _commands_called(module)
        assert {"EVALSHA", "SCRIPT|LOAD"} & called or role is Role.WEBHOOKS, (module, called)  # the reader works
        assert called <= set(commands(role)), (role, sorted(called - set(commands(role))))


def test_the_namespace_is_matched_literally_even_with_glob_characters(locked: RedisServer) -> None:
    admin = redis.Redis.from_url(locked.url)
    worker = redis.Redis.from_url(locked.url_for("worker"))
    try:
        own = "tungsten:{m*[x]?}:queued"
        worker.hset(own + "-hash", "a", "1")
        for other in ("tungsten:{mANYx}:queued", "tungsten:{m*x?}:queued", "tungsten:{m*[x]!}:queued"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                worker.get(other)
        assert admin.hget(own + "-hash", "a") == b"1"
    finally:
        admin.close()
        worker.close()


def test_only_the_admin_administers_and_no_password_is_kept_in_clear(locked: RedisServer) -> None:
    admin = redis.Redis.from_url(locked.url)
    try:
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        listed = " ".join(admin.acl_list())
        assert not any(password in listed for password in locked.passwords.values())
        for user in ("api", "worker", "webhooks"):
            client = redis.Redis.from_url(locked.url_for(user))
            try:
                for command in (("CONFIG", "SET", "maxmemory", "1"), ("ACL", "SETUSER", user, "+@all"), ("SAVE",)):
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        client.execute_command(*command)
            finally:
                client.close()
        webhooks = redis.Redis.from_url(locked.url_for("webhooks"))
        webhooks.sadd("rq:queues", "rq:queue:x")  # RQ's keys, for the webhook workers only
        webhooks.close()
        api = redis.Redis.from_url(locked.url_for("api"))
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.smembers("rq:queues")
        api.close()
    finally:
        admin.close()


def test_what_scripts_wrote_survives_a_restart(tmp_path: Path) -> None:
    """Redis replays its append-only file as the default user, and re-checks each
    MULTI/EXEC (how a script's writes are logged) against that user's rights."""
    server = RedisServer(tmp_path / "redis", users=users(Keys("ns")))
    server.start()
    try:
        api = redis.Redis.from_url(server.url_for("api"))
        sha = api.script_load("redis.call('HSET', KEYS[1], 'a', '1') return redis.call('INCRBY', KEYS[2], 2)")
        assert api.evalsha(sha, 2, "tungsten:{ns}:pred:1", "tungsten:{ns}:queued") == 2
        api.close()
        server.stop()
        server.start()
        admin = redis.Redis.from_url(server.url)
        assert admin.hget("tungsten:{ns}:pred:1", "a") == b"1" and admin.get("tungsten:{ns}:queued") == b"2"
        admin.close()
    finally:
        server.stop()
