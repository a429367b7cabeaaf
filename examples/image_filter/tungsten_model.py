"""An image-to-image model: a torch filter (blur, sharpen, edges, invert), fast on a CPU.

Send a picture as a data URI, plain base64 or an http(s) URL; get the filtered picture
back as a PNG. ``filter`` is an Option, so inputs asking for different filters never
share a batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # torch's convention

from tungstenkit import BaseIO, Field, Image, Option, define_model

FILTERS = ("blur", "sharpen", "edges", "invert")


class Input(BaseIO):
    image: Image = Field(description="The picture to filter")
    filter: str = Option("blur", description="What to do to it", choices=list(FILTERS))


class Output(BaseIO):
    image: Image


def _gaussian(size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    steps = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-(steps**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)
    return kernel / kernel.sum()


@define_model(input=Input, output=Output, batch_size=8, gpu=False, python_packages=["torch==2.13.0", "numpy"])
class ImageFilter:
    def setup(self) -> None:
        torch.set_num_threads(1)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.kernels = {
            "blur": _gaussian(),
            "sharpen": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
            "sobel_x": sobel,
            "sobel_y": sobel.t(),
        }

    @torch.inference_mode()
    def predict(self, inputs: list[Input]) -> list[Output]:
        # Pictures in a batch may differ in size, so each goes through on its own.
        return [Output(image=Image.from_bytes(self._filter(x.image, x.filter), "image/png")) for x in inputs]

    def _filter(self, image: Image, name: str) -> bytes:
        pixels = torch.from_numpy(np.asarray(image.to_pil_image("RGB"), dtype=np.float32) / 255.0)
        channels = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        if name == "invert":
            result = 1.0 - channels
        elif name == "edges":
            gray = channels.mean(dim=1, keepdim=True)
            gx = self._convolve(gray, self.kernels["sobel_x"])
            gy = self._convolve(gray, self.kernels["sobel_y"])
            result = torch.sqrt(gx**2 + gy**2).clamp(0, 1).expand(-1, 3, -1, -1)
        else:
            result = self._convolve(channels, self.kernels[name])
        frame = (result.squeeze(0).permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return _png(frame)

    @staticmethod
    def _convolve(channels: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        count = channels.shape[1]
        weight = kernel.expand(count, 1, *kernel.shape).contiguous()
        pad = kernel.shape[-1] // 2
        padded = F.pad(channels, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(padded, weight, groups=count)


def _png(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(frame, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
