"""The wire format (``_wire``): one owner of every name, and Python and Lua reading the
same records the same way, through a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import redis
import redis.asyncio

from tungstenkit._queue import AsyncPredictionQueue, Keys, split_into_chunks
from tungstenkit._queue._scripts import script
from tungstenkit._queue._wire import (
    ENTRY,
    ENTRY_KEYS,
    NO_TENANT,
    Entry,
    EntryRef,
    ResultKind,
    StartFlags,
    lua_header,
    lua_tables,
)

_LUA = resources.files("tungstenkit._queue") / "lua"
_SCRIPTS = sorted(p.name.removesuffix(".lua") for p in _LUA.iterdir() if p.name.endswith(".lua"))
#: Every code the tables name (field names, result kinds, start flags).
_NAMED = {value for table in lua_tables().values() for value in table.values()}


def _code(source: str) -> str:
    """Lua source without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in source.splitlines())


@pytest.mark.parametrize("name", [n + ".lua" for n in _SCRIPTS])
def test_lua_scripts_name_the_codes_they_use(name: str) -> None:
    code = _code((_LUA / name).read_text())
    quoted = {m.group(2) for m in re.finditer(r"(['\"])([^'\"]*)\1", code)}
    assert not quoted & _NAMED, f"{name} writes a code by its letter; use the table lua_header names it in"
    member = {m.group(1) for m in re.finditer(r"\w\.([A-Za-z_]\w*)\b(?!\s*\()", code)}
    keys = {m.group(1) for m in re.finditer(r"[{,]\s*([A-Za-z_]\w*)\s*=[^=]", code)}
    assert not (member | keys) & _NAMED, f"{name} reads or writes a field by its letter"


def test_the_lint_finds_a_bare_letter() -> None:
    code = _code("local id = fields.p\nif kind == 'b' then end\nreadd(q, q, k, s, {e = true})\n-- 'x' in a comment\n")
    assert {m.group(2) for m in re.finditer(r"(['\"])([^'\"]*)\1", code)} & _NAMED == {"b"}
    assert {m.group(1) for m in re.finditer(r"\w\.([A-Za-z_]\w*)\b(?!\s*\()", code)} & _NAMED == {"p"}
    assert {m.group(1) for m in re.finditer(r"[{,]\s*([A-Za-z_]\w*)\s*=[^=]", code)} & _NAMED == {"e"}


def test_each_script_gets_the_wire_names_it_uses_and_its_sha_is_stable() -> None:
    for name in _SCRIPTS:
        if name in ("common", "fence", "readd", "admission"):
            continue  # parts put in front of others, not scripts of their own
        loaded = script(name)
        assert loaded.source.startswith(lua_header(loaded.source))
        script.cache_clear()
        assert script(name).sha == loaded.sha
    assert "local START" in script("start").source and "local ENTRY" not in script("start").source
    assert "local function entry_refs" in script("finish").source
    assert f"local NO_TENANT = '{NO_TENANT}'" in script("submit").source


def test_the_bytes_stay_compact() -> None:
    # Written per chunk of inputs: one letter each (a longer name is bytes per input).
    assert all(len(value) == 1 for value in _NAMED)
    assert len(set(lua_tables()["ENTRY"].values())) == len(lua_tables()["ENTRY"])  # no two fields share a name
    assert {k.value for k in ResultKind} == {"o", "e", "x", "d", "b"}
    assert [StartFlags(w, h).encode() for w in (False, True) for h in (False, True)] == ["-", "h", "w", "wh"]
    assert StartFlags.encode_all([False, False, True, True], [False, True, False, True]) == ["-", "h", "w", "wh"]


def test_entry_refs_round_trip_in_python() -> None:
    refs = [EntryRef("1700000000000-0", 0, 4), EntryRef("1700000000000-1", 4, 1)]
    text = EntryRef.encode_list(refs)
    assert text == "1700000000000-0:0:4 1700000000000-1:4:1"
    assert EntryRef.decode_list(text) == refs
    assert EntryRef.decode_list("") == []


# ---------------------------------------------------------------------------------
# Through Redis: what one side writes, the other reads.


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _lua(client: redis.Redis, body: str, keys: list[str], *args: Any) -> Any:
    return client.eval(lua_header() + body, len(keys), *keys, *args)


def _submit(redis_url: str, keys: Keys, prediction_id: str, n: int, **options: Any) -> None:
    async def go() -> None:
        api_client = redis.asyncio.Redis.from_url(redis_url)
        try:
            api = AsyncPredictionQueue(api_client, keys, result_ttl_s=60, max_queued_inputs=0)
            inputs = [f'{{"x": {i}}}' for i in range(n)]
            await api.submit(prediction_id, split_into_chunks(inputs, ["g"] * n, 2), n, **options)
        finally:
            await api_client.aclose()

    asyncio.run(go())


def test_an_entry_lua_writes_is_the_entry_python_encodes(client: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    _submit(redis_url, keys, "hooked", 3, webhook_url="http://hook", webhook_events=["start", "completed"])
    _submit(redis_url, keys, "plain", 1, deadline_ms=60_000, priority="high", tenant="acme")
    stored = client.xrange(keys.queue)
    entries = [Entry.decode(sid, fields) for sid, fields in stored]
    assert [(e.prediction_id, e.start, e.count, e.total) for e in entries] == [
        ("hooked", 0, 2, 3),
        ("hooked", 2, 1, 3),
        ("plain", 0, 1, 1),
    ]
    assert entries[0].data == b'[{"x": 0},{"x": 1}]' and entries[0].group == "g"
    assert entries[0].webhook_events == "start completed" and entries[2].webhook_events == ""
    assert entries[2].deadline_ms > entries[2].queued_at_ms and entries[0].deadline_ms == 0
    assert (entries[2].priority, entries[2].tenant) == ("high", "acme") and entries[0].priority == "normal"
    for entry, (_, fields) in zip(entries, stored):
        # Field for field, byte for byte (the order is Lua's, not part of the format).
        assert {k.encode(): v.encode() if isinstance(v, str) else v for k, v in entry.encode().items()} == fields
    assert set(stored[0][1]) == {b"p", b"s", b"n", b"g", b"d", b"t", b"c", b"w"}
    # The prediction's entry list, as Python reads it, names the same entries.
    listed = client.hget(keys.prediction("hooked"), "entries")
    assert EntryRef.decode_list(listed.decode()) == [e.ref for e in entries[:2]]


def test_lua_reads_the_fields_python_encodes(client: redis.Redis, namespace: str) -> None:
    stream = Keys(namespace).queue
    entry = Entry(
        "",
        "p1",
        4,
        2,
        "grp",
        b"[1,2]",
        6,
        "t0",
        webhook_events="completed",
        deadline_ms=7,
        queued_ms=5,
        priority="low",
        tenant="acme",
        stepped_aside=True,
    )
    client.xadd(stream, entry.encode())  # type: ignore[arg-type]
    read = _lua(
        client,
        """
        local flat = redis.call('XRANGE', KEYS[1], '-', '+')[1][2]
        local fields = {}
        for i = 1, #flat, 2 do
          fields[flat[i]] = flat[i + 1]
        end
        local names = {'prediction', 'start', 'count', 'group', 'data', 'total', 'created', 'webhook_events',
          'deadline', 'queued', 'priority', 'tenant', 'stepped_aside'}
        local values = {}
        for i, name in ipairs(names) do
          values[i] = fields[ENTRY[name]] or ''
        end
        return values
        """,
        [stream],
    )
    assert read == [b"p1", b"4", b"2", b"grp", b"[1,2]", b"6", b"t0", b"completed", b"7", b"5", b"low", b"acme", b"1"]
    ((sid, fields),) = client.xrange(stream)
    assert Entry.decode(sid, fields) == dataclasses.replace(entry, sid=sid.decode())
    assert ENTRY.prediction == "p" and ENTRY_KEYS.prediction == b"p"


def test_entry_lists_round_trip_between_python_and_lua(client: redis.Redis) -> None:
    refs = [EntryRef("1700000000000-0", 0, 32), EntryRef("1700000000001-12", 32, 3)]
    triples = _lua(
        client,
        """
        local found = {}
        for sid, start, count in entry_refs(ARGV[1]) do
          found[#found + 1] = {sid, start, count}
        end
        return {found, entry_list({entry_ref(ARGV[2], ARGV[3], ARGV[4]), entry_ref(ARGV[5], ARGV[6], ARGV[7])})}
        """,
        [],
        EntryRef.encode_list(refs),
        *[part for ref in refs for part in (ref.sid, ref.start, ref.count)],
    )
    assert [EntryRef(s.decode(), int(b), int(n)) for s, b, n in triples[0]] == refs
    assert EntryRef.decode_list(triples[1].decode()) == refs


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("hooked", [False, True])
def test_start_flags_read_the_same_in_lua(client: redis.Redis, whole: bool, hooked: bool) -> None:
    flags = StartFlags(whole, hooked)
    read = _lua(
        client,
        "return {string.find(ARGV[1], START.whole, 1, true) and 1 or 0, string.find(ARGV[1], START.hooked, 1, true) and 1 or 0}",
        [],
        flags.encode(),
    )
    assert StartFlags(bool(read[0]), bool(read[1])) == flags == StartFlags.decode(flags.encode())


def test_result_kinds_are_the_ones_lua_compares() -> None:
    assert lua_tables()["RESULT"] == {k.name.lower(): k.value for k in ResultKind}
    finish = _code(script("finish").source)
    for kind in ResultKind:
        if kind is not ResultKind.OUTPUTS:  # outputs: whatever is none of the others
            assert f"RESULT.{kind.name.lower()}" in finish
