"""The Lua scripts (in ``lua/``) that make every state change atomic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tungstenkit._measurements import lua_prelude


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA-1


@cache
def script(name: str) -> Script:
    """A script; those that end predictions get the shared functions of ``common.lua``."""
    folder = resources.files("tungstenkit._queue") / "lua"
    source = (folder / f"{name}.lua").read_text()
    if name in ("finish", "cancel", "reclaim"):
        source = lua_prelude() + (folder / "common.lua").read_text() + "\n" + source
    return Script(name, source)
