"""The Lua scripts (in ``lua/``) that make every state change atomic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tungstenkit._measurements import lua_prelude
from tungstenkit._queue._wire import lua_header

#: Scripts that end predictions get the metrics prelude and ``common.lua``.
_ENDING = ("finish", "cancel", "reclaim")
#: Scripts that act for a worker on entries it holds get ``fence.lua``.
_FENCED = ("start", "finish", "requeue", "step_aside")
#: Scripts that move entries to the end of the stream get ``readd.lua``.
_READDING = ("finish", "requeue", "submit", "admit", "cancel", "step_aside")
#: Scripts that admit waiting entries get ``admission.lua``.
_ADMITTING = ("finish", "submit", "admit", "cancel", "step_aside")


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA-1


@cache
def script(name: str) -> Script:
    """A script, with the shared functions it uses put in front, and the names of the wire
    format that it uses (``_wire.lua_header``) in front of all."""
    folder = resources.files("tungstenkit._queue") / "lua"
    source = (folder / f"{name}.lua").read_text()
    if name in _ADMITTING:
        source = (folder / "admission.lua").read_text() + "\n" + source
    if name in _READDING:
        source = (folder / "readd.lua").read_text() + "\n" + source
    if name in _FENCED:
        source = (folder / "fence.lua").read_text() + "\n" + source
    if name in _ENDING:
        source = lua_prelude() + (folder / "common.lua").read_text() + "\n" + source
    return Script(name, lua_header(source) + source)
