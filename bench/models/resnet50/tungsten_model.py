"""Bench model for the GPU scenario: ResNet-50 with random weights, fp16 on a GPU.

Each input is only a seed; the 3x224x224 image is generated from it on the device in one
vectorised operation (no host-to-device copy of pixels, and an image never depends on its
batch neighbours). Each output reports the predicted class and the batch it ran in.

The architecture is torchvision's ``resnet50``. Where torchvision cannot be imported (its
PyPI wheels need a CUDA build of torch, so a CPU-only machine may lack it), the same
architecture is built from torch layers below: same layers, same 25,557,032 parameters.

Environment: ``BENCH_DEVICE`` (``cuda`` when available, else ``cpu``), ``BENCH_DTYPE``
(``float16`` on a GPU, ``float32`` on the CPU), ``BENCH_RESNET_BATCH`` (64; the batch
size the model declares, also what the warm-up runs).
"""

from __future__ import annotations

import itertools
import os
from typing import List

import torch
from torch import nn

from tungstenkit import BaseIO, Field, define_model

BATCH = int(os.environ.get("BENCH_RESNET_BATCH", "64"))
_BATCHES = itertools.count(1)


class Input(BaseIO):
    seed: int = Field(description="Seed of the generated 3x224x224 image", ge=0, le=2**31 - 1)


class Output(BaseIO):
    label: int
    batch: int
    batch_id: str


def resnet50() -> nn.Module:
    try:
        import torchvision

        return torchvision.models.resnet50(weights=None)
    except Exception:  # noqa: BLE001 - any import failure: build the same network from torch layers
        return _ResNet50()


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class _ResNet50(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, in_planes = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for i in range(blocks):
                stage.append(_Bottleneck(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@define_model(input=Input, output=Output, batch_size=BATCH, gpu=True, python_packages=["torch", "torchvision"])
class ResNet50Model:
    def setup(self) -> None:
        torch.manual_seed(0)
        device = os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        default_dtype = "float16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, os.environ.get("BENCH_DTYPE", default_dtype))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.net = resnet50().eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
        # The pixel pattern every image is derived from; an image is sin(seed * phi + base).
        self.base = torch.linspace(0, 1000, 3 * 224 * 224, device=self.device, dtype=torch.float32)
        self.predict([Input(seed=i) for i in range(BATCH)])  # warm-up: kernels chosen, memory reserved

    @torch.inference_mode()
    def predict(self, inputs: List[Input]) -> List[Output]:
        seeds = torch.tensor([x.seed for x in inputs], dtype=torch.float32).to(self.device, non_blocking=True)
        images = torch.sin(seeds[:, None] * 0.6180339 + self.base[None, :]).to(self.dtype)
        images = images.view(-1, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        labels = self.net(images).argmax(dim=1).tolist()
        batch_id = f"{os.getpid()}-{next(_BATCHES)}"
        return [Output(label=label, batch=len(inputs), batch_id=batch_id) for label in labels]
