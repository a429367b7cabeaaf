"""A toy token generator: a streaming model.

``predict`` is a generator. Each ``yield`` gives one partial output per input of the
batch, in input order: here the input's next token, or ``None`` for an input that has no
new token at this step (its text is shorter). Clients see each yield as an ``output``
event while the batch runs. The ``return`` value is the final outputs (what
``GET /predictions/{id}`` shows once it succeeded): here the whole texts.
"""

import time

from tungstenkit import BaseIO, Field, Option, define_model, progress


class Input(BaseIO):
    prompt: str = Field(description="Text to echo back, a word at a time", min_length=1, max_length=2000)
    delay_ms: int = Option(50, ge=0, le=1000, description="Milliseconds per token (a model's decoding step)")


class Output(BaseIO):
    text: str


@define_model(input=Input, output=Output, batch_size=8)
class TokenStream:
    def predict(self, inputs: list[Input]):
        words = [x.prompt.split() for x in inputs]
        steps = max(len(w) for w in words)
        print(f"decoding {len(inputs)} prompts in {steps} steps")
        for step in range(steps):
            time.sleep(max(x.delay_ms for x in inputs) / 1000)
            progress(step + 1, steps)
            # One partial output per input: the new token, or None when this input is done.
            yield [Output(text=w[step] + " ") if step < len(w) else None for w in words]
        return [Output(text=" ".join(w)) for w in words]
