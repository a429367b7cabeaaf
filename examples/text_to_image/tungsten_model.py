"""The seed's text-to-image model: a small torch network, deterministic, fast on a CPU.

It is not a diffusion model: it embeds the prompt's characters, mixes in noise drawn
from the seed, and decodes a 128x128 picture. Same prompt and seed, same PNG.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tungstenkit import BaseIO, Field, Image, Option, define_model

IMAGE_SIZE = 128
_LATENT = 64


class Input(BaseIO):
    prompt: str = Field(description="What to draw", min_length=1, max_length=1000)
    # Optional so that the request in the serving docs, which sends only a prompt, works.
    seed: int = Option(0, description="Random seed", ge=0, le=2**31 - 1)


class Output(BaseIO):
    image: Image


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, _LATENT)
        self.project = nn.Linear(2 * _LATENT, 64 * 4 * 4)
        channels = [64, 48, 32, 24, 16]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:] + [3]):
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        self.decode = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        text = self.embed(codes).sum(dim=1) / lengths.unsqueeze(1)
        hidden = self.project(torch.cat([text, noise], dim=1)).view(-1, 64, 4, 4)
        return self.decode(hidden)  # (N, 3, 128, 128) in [-1, 1]


@define_model(input=Input, output=Output, batch_size=8, gpu=False, python_packages=["torch==2.13.0", "numpy"])
class TextToImageModel:
    def setup(self) -> None:
        torch.manual_seed(0)
        torch.set_num_threads(1)
        self.decoder = _Decoder().eval()

    @torch.inference_mode()
    def predict(self, inputs: list[Input]) -> list[Output]:
        texts = [x.prompt.encode("utf-8")[:256] for x in inputs]
        width = 256
        codes = torch.zeros(len(texts), width, dtype=torch.long)
        for row, text in enumerate(texts):
            codes[row, : len(text)] = torch.tensor(list(text), dtype=torch.long)
        lengths = torch.tensor([len(t) for t in texts], dtype=torch.float32)
        noise = torch.stack(
            [torch.randn(_LATENT, generator=torch.Generator().manual_seed(x.seed)) for x in inputs]
        )
        # One sample at a time through the decoder: CPU kernels round differently for
        # different batch shapes, and an image must not depend on its batch neighbours.
        pixels = torch.cat([self.decoder(codes[i : i + 1], lengths[i : i + 1], noise[i : i + 1]) for i in range(len(inputs))])
        frames = ((pixels.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        return [Output(image=Image.from_bytes(_png(frame), "image/png")) for frame in frames]


def _png(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(frame, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
