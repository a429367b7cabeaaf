from __future__ import annotations

import pytest
from pydantic import ValidationError

from tungstenkit import BaseIO, Field, Option, define_model
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


def test_unknown_keys_are_ignored_by_a_class_that_is_no_models_input() -> None:
    assert Input.model_validate({"prompt": "a", "other": 1}).prompt == "a"


def test_a_models_input_refuses_unknown_fields_unless_it_opts_out() -> None:
    class Strict(BaseIO):
        prompt: str
        strength: float = Option(0.5)

    class Lenient(BaseIO, extra="ignore"):
        prompt: str

    class Output(BaseIO):
        text: str

    for input_cls in (Strict, Lenient):

        @define_model(input=input_cls, output=Output)
        class Model:
            def predict(self, inputs: list) -> list:
                return []

    with pytest.raises(ValidationError) as info:
        Strict.model_validate({"prompt": "a", "strenght": 0.9})
    (error,) = info.value.errors()
    assert (error["loc"], error["type"]) == (("strenght",), "extra_forbidden")
    assert Strict.model_json_schema()["additionalProperties"] is False
    assert Lenient.model_validate({"prompt": "a", "strenght": 0.9}).prompt == "a"
    assert "additionalProperties" not in Lenient.model_json_schema()
    # Outputs keep ignoring the unknown keys of a dict that predict returns.
    assert Output.model_validate({"text": "t", "debug": 1}).text == "t"


def test_batch_group_key_depends_only_on_option_values() -> None:
    assert batch_group_key({"a": 1, "b": "x"}) == batch_group_key({"b": "x", "a": 1})
    assert batch_group_key({"a": 1}) != batch_group_key({"a": 2})
    assert batch_group_key({}) == "-"
