"""What the API and the workers hand the queue and get from it: chunks of inputs, batch
starts, results, events, and the rendered prediction body (``_wire`` encodes what of
them goes into Redis)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tungstenkit._queue._wire import EVENT_KEYS, Entry, ResultKind, StartFlags


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive inputs of one prediction that share an option group."""

    start: int
    count: int
    group: str
    data: str  # JSON list of the inputs


def split_into_chunks(inputs: Sequence[str], groups: Sequence[str], max_size: int) -> list[Chunk]:
    """Cut a prediction's inputs (each a JSON object string) into stream entries.

    A chunk never mixes option groups and never holds more than ``max_size`` inputs,
    so several workers can share a large request.
    """
    chunks: list[Chunk] = []
    start = 0
    while start < len(inputs):
        end = start + 1
        while end < len(inputs) and end - start < max_size and groups[end] == groups[start]:
            end += 1
        chunks.append(Chunk(start, end - start, groups[start], "[" + ",".join(inputs[start:end]) + "]"))
        start = end
    return chunks


@dataclass(frozen=True)
class BatchStart:
    """A batch that began: the predictions it serves and the entries it runs.

    ``whole[i]`` says that the batch holds all of prediction ``i`` in one entry read
    for the first time, so one check marks it started; ``hooked[i]`` that its webhook
    wants the start event (so the start is announced even if the batch ended first).
    """

    prediction_ids: list[str]
    sids: list[str]
    whole: list[bool]
    hooked: list[bool] = field(default_factory=list)
    #: Per prediction: when its first entry was queued (ms, Redis's clock), for those
    #: whose first entry is in this batch; else 0.
    queued_ms: list[int] = field(default_factory=list)
    #: When the batch began (Unix seconds, the worker's clock).
    at: float = 0.0

    def flags(self) -> list[str]:
        """Per prediction, its ``StartFlags`` as ``start.lua`` takes them."""
        hooked = self.hooked or [False] * len(self.whole)
        return StartFlags.encode_all(self.whole, hooked)


def _sid_order(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def sid_range(sids: Sequence[str]) -> tuple[str, str]:
    """The lowest and highest of stream entry ids (``("", "")`` for none), in stream order."""
    if not sids:
        return "", ""
    return min(sids, key=_sid_order), max(sids, key=_sid_order)


@dataclass(frozen=True)
class StoredFile:
    """An output file kept in Redis for ``GET /files/<name>`` (``output_files=url``)."""

    name: str
    mime_type: str
    data: bytes


#: Output files are stored with this many times the result TTL, provisionally: once the
#: result that links to them is recorded (``finish.lua``) they get its expiry exactly
#: when their prediction succeeds, and are deleted when it fails. The provisional
#: expiry covers the time until the last entry of a long prediction ends, and removes
#: files whose result was never recorded (the worker died in between).
FILE_TTL_FACTOR = 2


@dataclass(frozen=True)
class EntryResult:
    """What became of an entry: outputs, an error, or dropped unrun."""

    OUTPUTS = ResultKind.OUTPUTS
    ERROR = ResultKind.ERROR
    DROPPED = ResultKind.DROPPED
    EXPIRED = ResultKind.EXPIRED
    BODY = ResultKind.BODY

    entry: Entry
    kind: ResultKind
    #: For outputs, the entry's outputs as JSON objects joined by commas; for an
    #: error, its message; for a body, the body.
    payload: str = ""
    #: For outputs, the files their links point to (``output_files=url``).
    files: tuple[StoredFile, ...] = ()
    #: When the first batch holding the entry started.
    started: str = ""
    #: For outputs not serialised yet: the output objects, in order (the worker's
    #: writer thread serialises them into ``payload``, off the model thread).
    outputs: tuple[Any, ...] = ()


@dataclass
class PredictionEvents:
    """What the model said for one prediction since the last write: events for its
    stream, in order (type and JSON data), its latest progress (JSON) and new log text."""

    prediction_id: str
    events: list[tuple[str, str]] = field(default_factory=list)
    progress: str = ""
    logs: str = ""


#: The types of the events a prediction's stream holds (the others, ``queued``,
#: ``start`` and ``completed``, are made from its hash when a client reads them).
STORED_EVENTS = ("output", "progress", "log")
#: Output and logs webhooks of one prediction are queued at most this often.
WEBHOOK_EVENT_INTERVAL_MS = 500


# ---------------------------------------------------------------------------------
# The GET body. ``lua/common.lua`` renders the same shape for what ends in Lua.


def _json_string(value: str | None) -> str:
    return json.dumps(value) if value else "null"


def render_body(
    status: str,
    outputs: str | None,
    error: str | None,
    created: str,
    started: str | None,
    completed: str | None,
    progress: str | None = None,
    logs: str | None = None,
) -> str:
    """``{"outputs", "status", "error_message", "created_at", "started_at", "completed_at",
    "progress", "logs"}``.

    ``outputs`` (a JSON list) and ``progress`` (a JSON object) are copied through without
    being parsed again.
    """
    return (
        f'{{"outputs":{outputs or "null"},"status":"{status}","error_message":{_json_string(error)},'
        f'"created_at":{_json_string(created)},"started_at":{_json_string(started)},'
        f'"completed_at":{_json_string(completed)},"progress":{progress or "null"},"logs":{_json_string(logs)}}}'
    )


def render_open(
    created: bytes, started: bytes | None, progress: bytes | None = None, logs: bytes | None = None
) -> bytes:
    """The body of a prediction still pending or running."""
    status = "running" if started else "pending"
    return render_body(
        status,
        None,
        None,
        created.decode(),
        (started or b"").decode(),
        None,
        progress.decode() if progress else None,
        logs.decode(errors="replace") if logs else None,
    ).encode()


#: The prediction hash fields a read needs.
READ_FIELDS = ("result", "created", "started", "progress", "logs")


@dataclass(frozen=True)
class Fetched:
    """A prediction's GET body, and whether it ended (its body will not change)."""

    body: bytes
    ended: bool


def read_prediction(values: Sequence[bytes | None]) -> Fetched | None:
    """A prediction from its ``READ_FIELDS``; None if there is no such prediction."""
    result, created, started, progress, logs = (*values, None, None)[:5]
    if result is not None:
        return Fetched(result, True)
    if created is None:
        return None
    return Fetched(render_open(created, started, progress, logs), False)


#: Stored events one read returns at most (a client further behind reads again).
EVENTS_PER_READ = 500


@dataclass(frozen=True)
class EventsRead:
    """A prediction as it stands, with stored events: ``(id, type, data)``."""

    fetched: Fetched
    created: str
    started: str | None
    events: list[tuple[str, str, bytes]]


def events_read(state: Sequence[bytes | None], stored: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> EventsRead | None:
    """An ``EventsRead`` from the prediction's ``READ_FIELDS`` and an ``XRANGE`` of its events."""
    fetched = read_prediction(state)
    if fetched is None:
        return None
    created, started = state[1], state[2]
    events = [
        (sid.decode(), fields.get(EVENT_KEYS.type, b"").decode(), fields.get(EVENT_KEYS.data, b"null"))
        for sid, fields in stored
        if fields
    ]
    return EventsRead(fetched, (created or b"").decode(), started.decode() if started else None, events)
