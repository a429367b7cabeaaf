"""A toy "denoising steps" image model: a streaming model whose partial outputs are
images.

It starts from noise and moves towards a picture of the requested colour in ``steps``
steps, yielding the image of every step (each a whole output, so the last yield is also
the final output: no ``return`` needed). File outputs in partial outputs travel as data
URIs in the ``output`` events; keep them small, or yield every few steps.
"""

import random
import time

from PIL import Image as PILImage

from tungstenkit import BaseIO, Field, Image, Option, define_model, progress

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (240, 210, 40)}


class Input(BaseIO):
    colour: str = Field(description="The picture's colour", choices=sorted(COLOURS))
    steps: int = Option(10, ge=1, le=50, description="Denoising steps (one partial output each)")
    size: int = Option(32, ge=8, le=128, description="Width and height in pixels")
    seed: int = Option(0, ge=0)
    step_ms: int = Option(0, ge=0, le=2000, description="Milliseconds per step (a real model's time)")


class Output(BaseIO):
    image: Image


@define_model(input=Input, output=Output, batch_size=4, python_packages=["pillow"])
class Denoising:
    def predict(self, inputs: list[Input]):
        steps = max(x.steps for x in inputs)
        noise = [self._noise(x) for x in inputs]
        for step in range(1, steps + 1):
            time.sleep(max(x.step_ms for x in inputs) / 1000)
            progress(step, steps, "denoising")
            outputs = []
            for x, start in zip(inputs, noise):
                done = min(step / x.steps, 1.0)
                target = PILImage.new("RGB", start.size, COLOURS[x.colour])
                outputs.append(Output(image=Image.from_pil_image(PILImage.blend(start, target, done))))
            yield outputs

    def _noise(self, x: Input) -> PILImage.Image:
        rng = random.Random(x.seed)
        return PILImage.frombytes(
            "RGB", (x.size, x.size), bytes(rng.randrange(256) for _ in range(3 * x.size * x.size))
        )
