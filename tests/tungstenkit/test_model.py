"""``define_model`` checks a model class when it is defined."""

from __future__ import annotations

from typing import Optional

import pytest

from tungstenkit import BaseIO, Field, Image, Option, define_model
from tungstenkit._errors import ModelDefinitionError
from tungstenkit._model import get_definition


class Input(BaseIO):
    x: int


class Output(BaseIO):
    y: int


def test_a_valid_model_records_its_configuration() -> None:
    @define_model(
        input=Input,
        output=Output,
        batch_size=8,
        gpu=True,
        gpu_mem_gb=24,
        python_packages=["torch"],
        system_packages=["ffmpeg"],
        cuda_version="12.1",
        include_files=["*.py"],
        dockerfile_commands=["RUN x"],
    )
    class Model:
        def predict(self, inputs):
            return [Output(y=i.x) for i in inputs]

    definition = get_definition(Model)
    assert definition is not None
    assert definition.config.batch_size == 8 and definition.config.gpu
    assert definition.config.python_packages == ("torch",)
    assert definition.input_cls is Input and definition.output_cls is Output
    model = Model()
    model.setup()  # a no-op setup is added
    assert model.predict_demo([Input(x=1)]) == ([Output(y=1)], [Output(y=1)])


def _define(body: dict, **kwargs: object) -> type:
    params = {"input": Input, "output": Output, **kwargs}
    return define_model(**params)(type("Model", (), body))  # type: ignore[arg-type]


def _predict(self, inputs):
    return []


@pytest.mark.parametrize(
    ("body", "kwargs", "message"),
    [
        ({}, {}, "has no predict method"),
        ({"predict": lambda self: []}, {}, r"predict must take exactly \(self, inputs\)"),
        ({"predict": lambda self, a, b: []}, {}, r"predict must take exactly \(self, inputs\)"),
        ({"predict": _predict, "setup": lambda self, path: None}, {}, r"setup must take exactly \(self\)"),
        ({"predict": staticmethod(lambda inputs: [])}, {}, "must be a plain method"),
        ({"predict": _predict, "predict_demo": _predict}, {}, "needs demo_output"),
        ({"predict": _predict}, {"input": dict}, "must be a subclass of tungstenkit.BaseIO"),
        ({"predict": _predict}, {"output": int}, "must be a subclass of tungstenkit.BaseIO"),
        ({"predict": _predict}, {"batch_size": 0}, "batch_size must be a positive integer"),
        ({"predict": _predict}, {"cuda_version": "12.1"}, "cuda_version is set but gpu is not"),
    ],
)
def test_mistakes_raise_errors_that_say_what_to_fix(body: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelDefinitionError, match=message):
        _define(body, **kwargs)


def test_unsupported_field_types_are_refused() -> None:
    class ListInput(BaseIO):
        xs: list[int]

    class OptionalRequired(BaseIO):
        x: Optional[int]  # noqa: UP045

    class OutputWithDefault(BaseIO):
        y: int = 3

    class OutputWithUnion(BaseIO):
        y: Optional[int] = Field()  # noqa: UP045

    with pytest.raises(ModelDefinitionError, match="input fields may be"):
        _define({"predict": _predict}, input=ListInput)
    with pytest.raises(ModelDefinitionError, match="Optional but required"):
        _define({"predict": _predict}, input=OptionalRequired)
    with pytest.raises(ModelDefinitionError, match="output fields cannot be options"):
        _define({"predict": _predict}, output=OutputWithDefault)
    with pytest.raises(ModelDefinitionError, match="unions and Optional are not supported"):
        _define({"predict": _predict}, output=OutputWithUnion)


def test_supported_field_types_are_accepted() -> None:
    class RichInput(BaseIO):
        image: Image
        n: Optional[int] = Option(None)  # noqa: UP045
        flag: bool = False

    class Nested(BaseIO):
        score: float

    class RichOutput(BaseIO):
        images: list[Image]
        scores: dict[str, float]
        nested: Nested
        nested_list: list[Nested]

    assert get_definition(_define({"predict": _predict}, input=RichInput, output=RichOutput)) is not None


def test_masked_image_inputs_are_accepted_and_refused_as_outputs() -> None:
    from tungstenkit import MaskedImage
    from tungstenkit._model import has_file_fields

    class MaskedInput(BaseIO):
        masked: MaskedImage
        prompt: str = Option("")

    class MaskedOutput(BaseIO):
        masked: MaskedImage

    definition = get_definition(_define({"predict": _predict}, input=MaskedInput))
    assert definition is not None and has_file_fields(MaskedInput) and not has_file_fields(Input)
    assert definition.input_schema()["$defs"]["MaskedImage"]["x-tungsten-file"] == "masked_image"
    with pytest.raises(ModelDefinitionError, match="MaskedImage is an input type"):
        _define({"predict": _predict}, output=MaskedOutput)
