from __future__ import annotations

import pytest
from pydantic import ValidationError

from tungstenkit import BaseIO, Field, Option
from tungstenkit._base_io import batch_group_key, option_names


class Input(BaseIO):
    prompt: str = Field(description="What to draw", min_length=1, max_length=10)
    steps: int = Option(20, ge=1, le=50)
    sampler: str = Option("ddim", choices=["ddim", "euler"])
    strength: float = Option(0.5, ge=0, le=1)
    num_images: int = 1


def test_field_is_required_and_option_is_not() -> None:
    assert option_names(Input) == ("steps", "sampler", "strength", "num_images")
    with pytest.raises(ValidationError) as info:
        Input.model_validate({})
    assert info.value.errors()[0]["loc"] == ("prompt",)


@pytest.mark.parametrize(
    ("values", "field", "kind"),
    [
        ({"prompt": ""}, "prompt", "string_too_short"),
        ({"prompt": "x" * 11}, "prompt", "string_too_long"),
        ({"prompt": "a", "steps": 0}, "steps", "greater_than_equal"),
        ({"prompt": "a", "steps": 51}, "steps", "less_than_equal"),
        ({"prompt": "a", "sampler": "plms"}, "sampler", "choice"),
    ],
)
def test_constraints_are_enforced(values: dict, field: str, kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        Input.model_validate(values)
    error = info.value.errors()[0]
    assert error["loc"] == (field,) and error["type"] == kind


def test_choices_message_lists_the_choices() -> None:
    with pytest.raises(ValidationError, match="Input should be one of 'ddim', 'euler'"):
        Input(prompt="a", sampler="plms")


def test_defaults_are_validated_too() -> None:
    with pytest.raises(ValidationError):

        class Bad(BaseIO):
            n: int = Option(5, le=3)

        Bad()


def test_schema_carries_descriptions_bounds_and_choices() -> None:
    schema = Input.model_json_schema()["properties"]
    assert schema["prompt"]["description"] == "What to draw"
    assert schema["num_images"]["description"] == "Num Images"  # generated from the name
    assert schema["steps"]["minimum"] == 1 and schema["steps"]["maximum"] == 50
    assert schema["sampler"]["choices"] == ["ddim", "euler"] == schema["sampler"]["enum"]


def test_unknown_keys_are_ignored() -> None:
    assert Input.model_validate({"prompt": "a", "other": 1}).prompt == "a"


def test_batch_group_key_depends_only_on_option_values() -> None:
    assert batch_group_key({"a": 1, "b": "x"}) == batch_group_key({"b": "x", "a": 1})
    assert batch_group_key({"a": 1}) != batch_group_key({"a": 2})
    assert batch_group_key({}) == "-"
