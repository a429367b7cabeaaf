"""The seed's text-to-image model: draws the prompt, deterministic and fast on a CPU.

It is not a diffusion model, but what it draws comes from the prompt, so a person can
tell which prompt made a picture: the colours the prompt names (else colours drawn from
its words), the shapes it names (a sun or a ball is a circle, a house a square, a
mountain a triangle, a star a star), and the prompt itself written across the picture.
The seed moves the shapes and the clouds of the background (made with torch). Same
prompt and seed, same PNG, whatever else shares the batch.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import textwrap

import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from tungstenkit import BaseIO, Field, Image, Option, define_model

IMAGE_SIZE = 256
_FONT_SIZE = 20

COLOURS = {
    "red": (214, 39, 40),
    "orange": (255, 127, 14),
    "yellow": (250, 210, 30),
    "gold": (212, 175, 55),
    "green": (44, 160, 44),
    "teal": (0, 128, 128),
    "cyan": (23, 190, 207),
    "blue": (31, 90, 220),
    "navy": (20, 30, 110),
    "purple": (128, 50, 170),
    "violet": (148, 103, 189),
    "pink": (247, 129, 191),
    "brown": (140, 86, 75),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (127, 127, 127),
    "gray": (127, 127, 127),
    "silver": (192, 192, 192),
}
SHAPES = {
    "circle": "circle", "sun": "circle", "moon": "circle", "ball": "circle", "planet": "circle", "eye": "circle",
    "square": "square", "box": "square", "house": "square", "building": "square", "window": "square",
    "triangle": "triangle", "mountain": "triangle", "pyramid": "triangle", "tree": "triangle", "tent": "triangle",
    "star": "star", "stars": "star",
}  # fmt: skip


class Input(BaseIO):
    prompt: str = Field(description="What to draw", min_length=1, max_length=1000)
    # Optional so that the request in the serving docs, which sends only a prompt, works.
    seed: int = Option(0, description="Random seed", ge=0, le=2**31 - 1)


class Output(BaseIO):
    image: Image


@define_model(
    input=Input, output=Output, batch_size=8, gpu=False, python_packages=["torch==2.13.0", "numpy", "pillow>=10.1"]
)
class TextToImageModel:
    def setup(self) -> None:
        torch.set_num_threads(1)
        self.font = ImageFont.load_default(size=_FONT_SIZE)

    @torch.inference_mode()
    def predict(self, inputs: list[Input]) -> list[Output]:
        return [Output(image=Image.from_bytes(_png(self.draw(x.prompt, x.seed)), "image/png")) for x in inputs]

    def draw(self, prompt: str, seed: int) -> PILImage.Image:
        words = re.findall(r"[a-z]+", prompt.lower())
        named = [COLOURS[w] for w in words if w in COLOURS]
        shapes = [SHAPES[w] for w in words if w in SHAPES][:3]
        palette = named or [_colour_of(w) for w in words[:3] or [prompt]]
        # Without shapes the picture is its colour (a blue sky); with shapes, the shapes take
        # the named colours and the background a pale tint of another one.
        spare = palette[len(shapes)] if len(palette) > len(shapes) else _colour_of(prompt)
        background = spare if not shapes else _tint(spare)
        generator = torch.Generator().manual_seed(seed)
        picture = PILImage.fromarray(_clouds(background, generator).numpy(), "RGB")
        canvas = ImageDraw.Draw(picture)
        for index, shape in enumerate(shapes):
            x, y = (torch.rand(2, generator=generator) * 0.4 + 0.3) * IMAGE_SIZE
            _shape(canvas, shape, float(x), float(y) - IMAGE_SIZE // 8, IMAGE_SIZE // 6, palette[index % len(palette)])
        text = "\n".join(textwrap.wrap(prompt, width=20)[:6])
        left, _, right, bottom = canvas.multiline_textbbox((0, 0), text, font=self.font, stroke_width=2, align="center")
        position = ((IMAGE_SIZE - (right - left)) / 2 - left, IMAGE_SIZE - bottom - 10)
        canvas.multiline_text(
            position, text, font=self.font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0), align="center"
        )
        return picture


def _clouds(colour: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """A soft background in ``colour``: coarse noise from the seed, smoothly upsampled."""
    coarse = torch.rand(1, 1, 6, 6, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=True)
    light = 0.85 + 0.25 * smooth[0, 0].clamp(0, 1)  # (H, W): 0.85 to 1.1 times the colour
    return (light.unsqueeze(-1) * torch.tensor(colour, dtype=torch.float32)).round().clamp(0, 255).to(torch.uint8)


def _shape(canvas: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: int, colour: tuple[int, int, int]) -> None:
    outline = _contrast(colour)
    if shape == "circle":
        canvas.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=outline, width=2)
    elif shape == "square":
        canvas.rectangle((x - r, y - r, x + r, y + r), fill=colour, outline=outline, width=2)
    elif shape == "triangle":
        canvas.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour, outline=outline, width=2)
    else:
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.pi * k / 5 - math.pi / 2
            points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
        canvas.polygon(points, fill=colour, outline=outline, width=2)


def _colour_of(word: str) -> tuple[int, int, int]:
    """A stable, fairly saturated colour for a word that names none."""
    digest = hashlib.blake2b(word.encode(), digest_size=3).digest()
    hue = digest[0] / 255 * 2 * math.pi
    return tuple(int(128 + 90 * math.cos(hue + shift)) for shift in (0, 2.094, 4.189))  # type: ignore[return-value]


def _tint(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * 0.6) for c in colour)  # type: ignore[return-value]


def _contrast(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return (20, 20, 20) if sum(colour) > 380 else (245, 245, 245)


def _png(picture: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
