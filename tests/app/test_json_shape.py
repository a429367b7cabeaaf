"""The JSON shape guard counts exactly what ``json.loads`` would build, however the body
is cut into chunks (property tests with Hypothesis), and refuses past each bound."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tungstenkit.app.error_responses import InvalidInput, MalformedBody
from tungstenkit.app.json_shape import JsonShapeGuard

#: Strings full of what a scanner could mistake for structure.
TRICKY_TEXT = st.text(alphabet=st.sampled_from(list('"\\[]{},:ab \n\t\u00e9\u2028/')), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY_TEXT
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TRICKY_TEXT, inner, max_size=5), max_leaves=30
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def values(value: Any) -> int:
    """Arrays and objects, and the items after a comma: what the guard counts."""
    children = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
    if children is None:
        return 0
    return 1 + max(0, len(children) - 1) + sum(values(child) for child in children)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed(guard: JsonShapeGuard, data: bytes, cuts: list[int]) -> JsonShapeGuard:
    for chunk in chunks(data, cuts):
        guard.feed(chunk)
    return guard


@settings(max_examples=300, deadline=None)
@given(VALUES, st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_counts_match_the_document_however_it_is_cut(value: Any, cuts: list[int], ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only, indent=None if cuts else 1).encode()
    guard = feed(JsonShapeGuard(max_items=10**9, max_values=10**9, max_depth=10**9), data, cuts)
    assert guard.depth == 0
    assert guard.values == values(value)
    if isinstance(value, list) and value:
        assert guard.top_commas == len(value) - 1


@settings(max_examples=200, deadline=None)
@given(VALUES, st.lists(st.integers(min_value=0), max_size=8))
def test_each_bound_holds_exactly(value: Any, cuts: list[int]) -> None:
    data = json.dumps(value).encode()
    limits = {"max_items": 10**9, "max_values": values(value), "max_depth": depth(value)}
    feed(JsonShapeGuard(**limits), data, cuts)  # at the bounds: accepted
    if depth(value):
        with pytest.raises(MalformedBody):
            feed(JsonShapeGuard(**{**limits, "max_depth": depth(value) - 1}), data, cuts)
        with pytest.raises(InvalidInput):
            feed(JsonShapeGuard(**{**limits, "max_values": values(value) - 1}), data, cuts)
    if isinstance(value, list) and len(value) > 1:
        feed(JsonShapeGuard(**{**limits, "max_items": len(value)}), data, cuts)
        with pytest.raises(InvalidInput) as refused:
            feed(JsonShapeGuard(**{**limits, "max_items": len(value) - 1}), data, cuts)
        assert refused.value.detail[0]["msg"] == f"At most {len(value) - 1} inputs per request, got more"


def test_a_backslash_at_the_end_of_a_chunk_escapes_the_next_one() -> None:
    parts = (b'[{"a": "x\\', b'"], ["}, {"b": 1}]')
    assert json.loads(b"".join(parts)) == [{"a": 'x"], ['}, {"b": 1}]
    guard = JsonShapeGuard(max_items=2, max_values=100)
    for part in parts:
        guard.feed(part)
    assert guard.top_commas == 1 and guard.depth == 0
