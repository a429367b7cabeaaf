"""The wire format: how the records the queue keeps in Redis are encoded, in one place.

Python and the Lua scripts (``lua/``) share every name below: ``lua_header()`` renders
them as Lua tables and functions, and ``_scripts`` puts those a script uses in front of
it, so a script writes ``ENTRY.prediction`` where Redis holds ``p`` (``tests/tungstenkit/test_wire.py``
fails on a bare letter in a script, and on Python and Lua reading one record differently).

The bytes stay compact: a stream entry is written per chunk of inputs, so its field names
are single letters, and so are the codes the workers send with each result.

Stream entry (the ``queue`` stream, and the ``wait:<priority>:<tenant>`` streams where
entries wait for admission), fields ``ENTRY``::

    p  prediction id                s  index of its first input     n  its inputs' count
    g  option group                 d  its inputs, a JSON list      t  the prediction's inputs
    c  created (ISO 8601)           w  webhook events ("start completed"), with a webhook only
    e  deadline (ms of Redis's clock), with a deadline only
    q  when first queued (ms of Redis's clock), once the entry moved to another stream
    r  priority, unless normal          o  tenant, unless "-" (a server without API keys)
    y  "1" once it stepped aside (``lua/step_aside.lua``), which it does at most once

Prediction hash: ``PREDICTION`` names its one field that is a code, ``n`` (its inputs'
count); the others are words (the package docstring lists them).

Entry list (the prediction hash's ``entries``): each entry's ``EntryRef``
``<sid>:<start>:<count>``, joined by spaces, in input order.

Result kind (``finish.lua``'s argument for each result): ``ResultKind``, one letter.

Start flags (``start.lua``'s argument for each prediction of a batch): ``StartFlags``:
``w`` the batch holds all of it in one entry read for the first time, ``h`` its webhook
wants the start event, ``wh`` both, ``-`` neither.

Event (the ``events:<id>`` stream), fields ``EVENT``: ``e`` type, ``d`` JSON data.

Output file (the ``file:<name>`` hash), fields ``FILE``: ``p`` prediction id, ``t``
media type, ``d`` bytes.

Done channel: one line per ended prediction, ``<id> <body>`` or, for a body too large
to carry, ``<id>``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

_Name = TypeVar("_Name", str, bytes)


@dataclass(frozen=True)
class EntryFields(Generic[_Name]):
    """The field names of a stream entry."""

    prediction: _Name
    start: _Name
    count: _Name
    group: _Name
    data: _Name
    total: _Name
    created: _Name
    webhook_events: _Name
    deadline: _Name
    queued: _Name
    priority: _Name
    tenant: _Name
    stepped_aside: _Name


ENTRY = EntryFields[str](
    prediction="p",
    start="s",
    count="n",
    group="g",
    data="d",
    total="t",
    created="c",
    webhook_events="w",
    deadline="e",
    queued="q",
    priority="r",
    tenant="o",
    stepped_aside="y",
)


@dataclass(frozen=True)
class PredictionFields(Generic[_Name]):
    """The prediction hash's fields that are codes; the others are spelled out (``created``,
    ``entries``, ``result``...: see the package docstring)."""

    #: How many inputs it has.
    inputs: _Name


PREDICTION = PredictionFields[str](inputs="n")


@dataclass(frozen=True)
class EventFields(Generic[_Name]):
    """The field names of an event in a prediction's events stream."""

    type: _Name
    data: _Name


EVENT = EventFields[str](type="e", data="d")


@dataclass(frozen=True)
class FileFields(Generic[_Name]):
    """The field names of an output file's hash."""

    prediction: _Name
    media_type: _Name
    data: _Name


FILE = FileFields[str](prediction="p", media_type="t", data="d")


def _as_bytes(names: EntryFields[str] | EventFields[str] | FileFields[str]) -> dict[str, bytes]:
    return {name: value.encode() for name, value in dataclasses.asdict(names).items()}


#: The same names as redis-py returns them (bytes), for reading.
ENTRY_KEYS = EntryFields[bytes](**_as_bytes(ENTRY))
EVENT_KEYS = EventFields[bytes](**_as_bytes(EVENT))
FILE_KEYS = FileFields[bytes](**_as_bytes(FILE))

#: The tenant of a server without API keys, whose entries carry no tenant field.
NO_TENANT = "-"


class ResultKind(str, Enum):
    """What became of an entry, as a worker reports it."""

    OUTPUTS = "o"
    ERROR = "e"
    DROPPED = "x"
    #: Not started by its deadline: its prediction fails, unless it started elsewhere.
    EXPIRED = "d"
    #: The prediction's whole ended body (made from OUTPUTS or ERROR of a whole entry).
    BODY = "b"


@dataclass(frozen=True)
class StartFlags:
    """What ``start.lua`` needs to know of each prediction in a batch that starts."""

    #: The batch holds all of it in one entry read for the first time: one check marks it started.
    whole: bool
    #: Its webhook wants the start event.
    hooked: bool

    WHOLE = "w"
    HOOKED = "h"
    NEITHER = "-"

    def encode(self) -> str:
        return self.encode_all([self.whole], [self.hooked])[0]

    @classmethod
    def decode(cls, text: str) -> StartFlags:
        return cls(cls.WHOLE in text, cls.HOOKED in text)

    @classmethod
    def encode_all(cls, whole: Sequence[bool], hooked: Sequence[bool]) -> list[str]:
        """The encoded flags of each prediction of a batch, without making a record of each."""
        w, h, neither = cls.WHOLE, cls.HOOKED, cls.NEITHER
        return [
            (w if is_whole else "") + (h if is_hooked else "") or neither for is_whole, is_hooked in zip(whole, hooked)
        ]


@dataclass(frozen=True)
class EntryRef:
    """Where one entry of a prediction is, and which of its inputs it holds."""

    sid: str
    start: int
    count: int

    SEPARATOR = ":"
    #: Between the refs of an entry list.
    LIST_SEPARATOR = " "

    def encode(self) -> str:
        return f"{self.sid}{self.SEPARATOR}{self.start}{self.SEPARATOR}{self.count}"

    @classmethod
    def decode(cls, text: str) -> EntryRef:
        sid, start, count = text.split(cls.SEPARATOR)
        return cls(sid, int(start), int(count))

    @classmethod
    def encode_list(cls, refs: Iterable[EntryRef]) -> str:
        return cls.LIST_SEPARATOR.join(ref.encode() for ref in refs)

    @classmethod
    def decode_list(cls, text: str) -> list[EntryRef]:
        return [cls.decode(part) for part in text.split(cls.LIST_SEPARATOR) if part]


@dataclass
class Entry:
    """A stream entry as a worker holds it: its fields, its id, and how it was read."""

    sid: str
    prediction_id: str
    start: int
    count: int
    group: str
    data: bytes
    #: How many inputs the whole prediction has, and when it was created.
    total: int = 0
    created: str = ""
    #: Taken over from a worker that died, or recovered: it may have started before.
    redelivered: bool = False
    #: The events the prediction's webhook wants ("start completed"; "" for none).
    webhook_events: str = ""
    #: When a worker must have started the prediction by (ms, Redis's clock; 0: no deadline).
    deadline_ms: int = 0
    #: When it was queued (ms, Redis's clock), if not when its id says: it waited for
    #: admission in another stream first (0: its id says).
    queued_ms: int = 0
    #: Its prediction's priority and tenant (``tenant_token``; "-": a server without API
    #: keys), which decide whether it steps aside for work that starts waiting.
    priority: str = "normal"
    tenant: str = NO_TENANT
    #: It stepped aside once already (``lua/step_aside.lua``): it never does again.
    stepped_aside: bool = False

    @property
    def queued_at_ms(self) -> int:
        """When the entry was queued (ms, Redis's clock)."""
        return self.queued_ms or sid_ms(self.sid)

    @property
    def whole(self) -> bool:
        """Whether this entry is all of its prediction."""
        return self.start == 0 and self.count == self.total

    @property
    def has_tenant(self) -> bool:
        """Whether an API key made its prediction (which then has an owner's count of queued
        inputs to release)."""
        return self.tenant != NO_TENANT

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.sid, self.start, self.count)

    def encode(self) -> dict[str, str | bytes]:
        """Its fields as ``submit.lua`` writes them (the optional ones only when set)."""
        fields: dict[str, str | bytes] = {
            ENTRY.prediction: self.prediction_id,
            ENTRY.start: str(self.start),
            ENTRY.count: str(self.count),
            ENTRY.group: self.group,
            ENTRY.data: self.data,
            ENTRY.total: str(self.total),
            ENTRY.created: self.created,
        }
        if self.webhook_events:
            fields[ENTRY.webhook_events] = self.webhook_events
        if self.deadline_ms:
            fields[ENTRY.deadline] = str(self.deadline_ms)
        if self.queued_ms:
            fields[ENTRY.queued] = str(self.queued_ms)
        if self.priority != "normal":
            fields[ENTRY.priority] = self.priority
        if self.tenant != NO_TENANT:
            fields[ENTRY.tenant] = self.tenant
        if self.stepped_aside:
            fields[ENTRY.stepped_aside] = "1"
        return fields

    @classmethod
    def decode(cls, sid: bytes | str, fields: Mapping[bytes, bytes], redelivered: bool = False) -> Entry:
        """An entry from its id and fields as redis-py returns them; raises ``KeyError`` or
        ``ValueError`` for one this version cannot read."""
        k = ENTRY_KEYS
        return cls(
            sid=sid.decode() if isinstance(sid, bytes) else sid,
            prediction_id=fields[k.prediction].decode(),
            start=int(fields[k.start]),
            count=int(fields[k.count]),
            group=fields[k.group].decode(),
            data=fields[k.data],
            total=int(fields.get(k.total, b"0")) or -1,
            created=fields.get(k.created, b"").decode(),
            redelivered=redelivered,
            webhook_events=fields.get(k.webhook_events, b"").decode(),
            deadline_ms=int(fields.get(k.deadline, b"0")),
            queued_ms=int(fields.get(k.queued, b"0")),
            priority=fields.get(k.priority, b"normal").decode(),
            tenant=fields.get(k.tenant, NO_TENANT.encode()).decode(),
            stepped_aside=k.stepped_aside in fields,
        )


def sid_ms(sid: str) -> int:
    """When a stream entry was added: the milliseconds of its id (Redis's clock)."""
    return int(sid.split("-", 1)[0])


def parse_done_message(data: bytes) -> list[tuple[str, bytes | None]]:
    """The ``done`` channel's lines: each ended prediction's id, with its body when it fit."""
    ended = []
    for line in data.split(b"\n"):
        prediction_id, _, body = line.partition(b" ")
        if prediction_id:
            ended.append((prediction_id.decode(), body or None))
    return ended


def _lua_string(value: str) -> str:
    if not value.isprintable() or "'" in value or "\\" in value:
        raise ValueError(f"not a plain Lua string: {value!r}")
    return f"'{value}'"


def _lua_table(name: str, values: Mapping[str, str]) -> str:
    return f"local {name} = {{" + ", ".join(f"{key} = {_lua_string(v)}" for key, v in values.items()) + "}\n"


def lua_tables() -> dict[str, dict[str, str]]:
    """The names the scripts share, as the Lua tables of ``lua_header`` hold them."""
    return {
        "ENTRY": dataclasses.asdict(ENTRY),
        "PREDICTION": dataclasses.asdict(PREDICTION),
        "EVENT": dataclasses.asdict(EVENT),
        "RESULT": {kind.name.lower(): kind.value for kind in ResultKind},
        "START": {"whole": StartFlags.WHOLE, "hooked": StartFlags.HOOKED},
    }


def lua_header(source: str | None = None) -> str:
    """The wire format in Lua, for the top of a script: the tables of ``lua_tables``,
    ``NO_TENANT``, and the entry list's encoding (``entry_ref`` makes one ref, ``entry_list`` joins refs,
    ``entry_refs`` iterates a list's refs as sid, start, count strings).

    With ``source``, only the parts that it names: each is built at every call of the
    script (all of them take Redis about a microsecond). Deterministic, so a script's
    SHA is too."""
    sep, space = EntryRef.SEPARATOR, EntryRef.LIST_SEPARATOR
    pattern = f"([^{space}{sep}]+){sep}(%d+){sep}(%d+)"
    parts = {name: _lua_table(name, values) for name, values in lua_tables().items()}
    parts["NO_TENANT"] = f"local NO_TENANT = {_lua_string(NO_TENANT)}\n"
    parts["entry_ref"] = (
        "local function entry_ref(sid, start, count)\n"
        f"  return sid .. {_lua_string(sep)} .. start .. {_lua_string(sep)} .. count\nend\n"
    )
    parts["entry_list"] = f"local function entry_list(refs)\n  return table.concat(refs, {_lua_string(space)})\nend\n"
    parts["entry_refs"] = (
        f"local function entry_refs(entries)\n  return string.gmatch(entries or '', {_lua_string(pattern)})\nend\n"
    )
    used = [part for name, part in parts.items() if source is None or re.search(rf"\b{name}\b", source)]
    return "-- The wire format, generated from tungstenkit/_queue/_wire.py.\n" + "".join(used)
