"""Where `tungsten serve` puts workers: GPUs found through nvidia-smi (faked here: this
machine has none), two workers per GPU unless memory says otherwise, `--gpus all`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MODELS, ServerFactory, tungsten, wait_for
from tungstenkit._errors import ConfigError
from tungstenkit._gpus import Gpu, choose_gpus, visible_gpus, workers_per_gpu


def _fake_nvidia_smi(folder: Path, *gpus: tuple[int, int]) -> Path:
    """An nvidia-smi that lists (index, MiB) GPUs as the real one does for our query."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    lines = "\\n".join(f"{index}, {mib}" for index, mib in gpus)
    script.write_text(f"#!/bin/sh\nprintf '{lines}\\n'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.fixture
def two_big_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = _fake_nvidia_smi(tmp_path / "bin", (0, 143771), (1, 143771))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    yield folder


def test_gpus_are_found_and_narrowed_by_cuda_visible_devices(two_big_gpus: Path) -> None:
    assert [g.id for g in visible_gpus(None)] == ["0", "1"]
    assert visible_gpus("1") == [Gpu("1", 143771 / 1024)]
    assert [g.id for g in choose_gpus("all", False, None)] == ["0", "1"]
    assert [g.id for g in choose_gpus(None, True, None)] == ["0", "1"]  # a GPU model: all of them
    assert choose_gpus(None, False, None) == []  # a CPU model: none unless asked
    assert [g.id for g in choose_gpus("1", False, None)] == ["1"]


def test_two_workers_per_gpu_unless_two_copies_do_not_fit() -> None:
    assert workers_per_gpu([Gpu("0", 140.0)], 16) == 2
    assert workers_per_gpu([Gpu("0")], 16) == 2  # memory unknown
    assert workers_per_gpu([Gpu("0", 24.0)], 16) == 1


def test_gpus_all_without_a_gpu_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "empty")))  # lists no GPU
    with pytest.raises(ConfigError, match="no GPU is visible"):
        choose_gpus("all", True, None)
    result = tungsten("serve", str(MODELS / "gpu_echo"), "--gpus", "all", env={"PATH": os.environ["PATH"]})
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith("Error: --gpus all")


def test_a_gpu_model_gets_two_workers_on_each_visible_gpu(serve: ServerFactory, two_big_gpus: Path) -> None:
    server = serve(MODELS / "gpu_echo", workers=None, env={"PATH": os.environ["PATH"]})
    wait_for(lambda: server.client.get("/health").json()["ready_workers"] == 4, 60, what="four ready workers")
    devices: dict[int, str] = {}

    def every_worker_answered() -> bool:
        for output in server.predict([{"x": i} for i in range(8)])["outputs"]:
            devices[output["pid"]] = output["device"]
        return len(devices) == 4

    wait_for(every_worker_answered, 60, interval=0.1, what="each worker to run a batch")
    assert sorted(devices.values()) == ["0", "0", "1", "1"]
    assert "Starting 4 workers, 2 per GPU, on GPU 0, 1" in server.log()
