"""A streaming model for the events bench: ``steps`` yields per batch, ``step_ms`` apart,
each output stamped with the moment it was yielded (this machine's clock)."""

import time

from tungstenkit import BaseIO, Option, define_model


class Input(BaseIO):
    steps: int = Option(50, ge=1, le=1000)
    step_ms: float = Option(10.0, ge=0, le=3_600_000)


class Output(BaseIO):
    step: int
    at: float
    batch: int


@define_model(input=Input, output=Output, batch_size=32)
class Stream50:
    def predict(self, inputs):
        steps = max(x.steps for x in inputs)
        for step in range(steps):
            time.sleep(inputs[0].step_ms / 1000)
            now = time.time()
            yield [Output(step=step, at=now, batch=len(inputs)) for _ in inputs]
