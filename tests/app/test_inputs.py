"""Properties of the request body parser (Hypothesis): whatever a client sends, only its documented errors.

``InputParser.parse`` answers a body with the inputs to queue, or raises ``MalformedBody``
(400), ``InvalidInput`` (422) or ``PayloadTooLarge`` (413); anything else would be a 500.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tungstenkit import BaseIO, Binary, Field, Image, MaskedImage, Option
from tungstenkit._fetch import Allowlist, FetchPolicy
from tungstenkit._files import FilePolicy
from tungstenkit.app.error_responses import InvalidInput, MalformedBody, PayloadTooLarge
from tungstenkit.app.inputs import InputParser

DOCUMENTED = (MalformedBody, InvalidInput, PayloadTooLarge)
EXAMPLES = settings(max_examples=150, deadline=None, database=None)


class Choices(BaseIO):
    weight: float = Field(ge=0, le=1)
    tags: list[str]


class Everything(BaseIO):
    prompt: str = Field(max_length=50)
    count: int = Field(ge=1, le=10)
    choices: Choices | None = Option(None)
    mode: Literal["fast", "slow"] = Option("fast")
    flag: bool = Option(False)
    ratio: float = Option(0.5, ge=0, le=1)
    image: Image | None = Option(None)
    binary: Binary | None = Option(None)
    masked: MaskedImage | None = Option(None)
    extra: dict[str, int] | None = Option(None)


FILES = FilePolicy(
    max_file_bytes=2000, max_image_pixels=10_000, fetch=FetchPolicy(allowlist=Allowlist.parse("10.0.0.0/8"))
)


@functools.cache
def _parser() -> InputParser:
    """Made on first use, not at import: an ``InputParser`` sets Pillow's process-wide
    bomb guard, which would then hold for every test of the session."""
    return InputParser(Everything, max_inputs=8, files=FILES)


@pytest.fixture(autouse=True, scope="module")
def _restore_pillow_guard() -> Iterator[None]:
    from PIL import Image as PILImageModule

    before = PILImageModule.MAX_IMAGE_PIXELS
    yield
    PILImageModule.MAX_IMAGE_PIXELS = before


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
#: Strings a file field may meet: URLs of every kind, data URIs, base64, paths, junk.
file_texts = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "ftp", "file", "HTTP", "data", "gopher"]),
        st.sampled_from(
            ["127.0.0.1", "[::1]", "10.1.2.3", "0x7f000001", "example.com", "", "a:b@c", "[zz]", "h:99999"]
        ),
        st.text(max_size=20),
    ),
    st.builds(
        lambda mime, data: f"data:{mime};base64,{data}",
        st.sampled_from(["image/png", "text/plain", "", ";;"]),
        st.text("ABCabc0123+/=", max_size=40),
    ),
)
json_values = st.recursive(
    scalars | file_texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
fields = st.sampled_from([*Everything.model_fields, "weight", "tags", "image", "mask", "unknown"])
#: Objects shaped like inputs: the real field names (and some others) with any values.
input_like = st.recursive(
    st.dictionaries(fields, json_values | file_texts, max_size=8),
    lambda inner: st.dictionaries(fields, inner | json_values, max_size=4),
    max_leaves=10,
)
#: Objects close to valid inputs, so that some pass and reach the rest of ``parse``.
nearly_valid = st.fixed_dictionaries(
    {"prompt": st.text(max_size=60), "count": st.integers(-1, 12)},
    optional={
        "choices": st.fixed_dictionaries(
            {"weight": st.floats(-1, 2), "tags": st.lists(st.text(max_size=5), max_size=3)}
        ),
        "mode": st.sampled_from(["fast", "slow", "FAST", ""]),
        "flag": scalars,
        "ratio": st.floats(allow_nan=True) | st.integers(),
        "image": file_texts,
        "binary": file_texts,
        "masked": st.fixed_dictionaries({"image": file_texts, "mask": file_texts}),
        "extra": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=3), max_size=3),
    },
)
bodies = st.one_of(
    st.lists(nearly_valid, min_size=1, max_size=3),
    st.lists(nearly_valid | input_like, max_size=10),
    json_values,
).map(lambda value: json.dumps(value).encode())


def _parse(body: bytes) -> Any:
    try:
        return _parser().parse(body)
    except DOCUMENTED as exc:
        return exc


@EXAMPLES
@given(bodies)
def test_any_json_body_gets_inputs_or_a_documented_error(body: bytes) -> None:
    result = _parse(body)
    event("accepted" if not isinstance(result, DOCUMENTED) else type(result).__name__)
    if not isinstance(result, DOCUMENTED):
        inputs, groups = result
        assert len(inputs) == len(groups) >= 1
        assert all(isinstance(json.loads(item), dict) for item in inputs)


@EXAMPLES
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_any_bytes_get_inputs_or_a_documented_error(body: bytes) -> None:
    _parse(body)
