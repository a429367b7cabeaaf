"""A model that does nothing: it measures the server's own cost per input."""

from tungstenkit import BaseIO, define_model


class Input(BaseIO):
    text: str = ""


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output, batch_size=32)
class NoopModel:
    def predict(self, inputs: list[Input]) -> list[Output]:
        return [Output(text=x.text) for x in inputs]
