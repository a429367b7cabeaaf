"""``-i name=value`` options of ``tungsten predict``."""

from __future__ import annotations

import json
from typing import Any

from tungstenkit._errors import TungstenError


def parse_assignments(assignments: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs; values that parse as JSON numbers/booleans/null become those."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise TungstenError(f"Inputs are given as name=value, got {assignment!r}")
        try:
            parsed = json.loads(raw)
            values[name] = parsed if isinstance(parsed, (int, float, bool)) or parsed is None else raw
        except ValueError:
            values[name] = raw
    return values
