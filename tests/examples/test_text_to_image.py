"""The text-to-image example draws what its prompt says, the same way every time."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.support import EXAMPLES
from tungstenkit._loader import load_model

#: The model's instance, set up, and its input class.
Model = tuple[Any, Any]


@pytest.fixture(scope="module")
def model() -> Model:
    definition = load_model(EXAMPLES / "text_to_image")
    instance = definition.cls()
    instance.setup()
    return instance, definition.input_cls


def _draw(model: Model, prompt: str, seed: int = 0) -> np.ndarray:
    instance, input_cls = model
    (output,) = instance.predict([input_cls(prompt=prompt, seed=seed)])
    with PILImage.open(io.BytesIO(output.image.read_bytes())) as picture:
        assert picture.format == "PNG" and picture.size == (256, 256)
        return np.asarray(picture.convert("RGB")).astype(int)


def _share_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> float:
    return float((np.abs(pixels - np.array(colour)).max(axis=-1) <= tolerance).mean())


RED, BLUE, YELLOW = (214, 39, 40), (31, 90, 220), (250, 210, 30)


def test_the_colours_and_shapes_named_are_drawn(model: Model) -> None:
    red_circle = _draw(model, "a red circle")
    assert _share_near(red_circle, RED) > 0.05 and _share_near(red_circle, BLUE) == 0
    blue_square = _draw(model, "a blue square and a yellow star")
    assert _share_near(blue_square, BLUE) > 0.05 and _share_near(blue_square, YELLOW) > 0.02
    assert _share_near(blue_square, RED) == 0
    # A square fills its bounding box; a circle leaves the corners of its box.
    square_box = _box(blue_square, BLUE)
    circle_box = _box(red_circle, RED)
    assert _fill(blue_square, BLUE, square_box) > 0.9
    assert 0.7 < _fill(red_circle, RED, circle_box) < 0.85  # pi/4 of its box
    assert _share_near(_draw(model, "a blue sky"), BLUE, 60) > 0.5


def _box(pixels: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.abs(pixels - np.array(colour)).max(axis=-1) <= 30)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _fill(pixels: np.ndarray, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> float:
    top, bottom, left, right = box
    return _share_near(pixels[top:bottom, left:right], colour)


def test_the_prompt_is_written_on_the_picture(model: Model) -> None:
    short = _draw(model, "a")
    long = _draw(model, "a professional photograph of an astronaut riding a horse")
    white = [_share_near(p, (255, 255, 255), 10) for p in (short, long)]
    black = [_share_near(p, (0, 0, 0), 10) for p in (short, long)]
    assert white[1] > 4 * white[0] > 0 and black[1] > 4 * black[0] > 0  # white letters outlined in black


def test_same_prompt_and_seed_same_picture(model: Model) -> None:
    prompt = "a green mountain under the sun"
    first = _draw(model, prompt, seed=7)
    assert np.array_equal(first, _draw(model, prompt, seed=7))
    assert not np.array_equal(first, _draw(model, prompt, seed=8))
    instance, input_cls = model
    batch = instance.predict([input_cls(prompt="other", seed=1), input_cls(prompt=prompt, seed=7)])
    with PILImage.open(io.BytesIO(batch[1].image.read_bytes())) as picture:
        assert np.array_equal(np.asarray(picture.convert("RGB")).astype(int), first)  # whatever shares the batch
