"""The metric definitions shared by the scripts, the workers and the API."""

from __future__ import annotations

import json
import sys
import types

import pytest

from tungstenkit._measurements import (
    BATCH_SIZE,
    MODEL_TIME,
    MetricDeltas,
    ThroughputMeter,
    gpu_memory,
    lua_prelude,
    parse_gpus,
)


def test_histograms_file_values_under_their_bucket() -> None:
    assert BATCH_SIZE.bucket_field(1) == "batch_size:le:1"
    assert BATCH_SIZE.bucket_field(3) == "batch_size:le:4"
    assert BATCH_SIZE.bucket_field(5000) == "batch_size:le:+Inf"
    assert MODEL_TIME.bucket_field(0.3) == "model_seconds:le:0.5"
    assert MODEL_TIME.labels()[-1] == "+Inf"


def test_the_lua_prelude_names_the_buckets_as_python_does() -> None:
    prelude = lua_prelude()
    for label in MODEL_TIME.labels()[:-1]:
        assert f"'{label}'" in prelude


def test_deltas_are_taken_once_and_can_be_put_back() -> None:
    deltas = MetricDeltas()
    deltas.add("batches")
    deltas.add("inputs:success", 4)
    deltas.observe(MODEL_TIME, 0.2)
    taken = deltas.take()
    assert taken == {"batches": 1, "inputs:success": 4, "model_seconds:le:0.25": 1, "model_seconds:sum": 0.2}
    assert deltas.take() == {}
    deltas.add("batches")
    deltas.restore(taken)  # the heartbeat that carried them failed
    assert deltas.take()["batches"] == 2


def test_throughput_is_measured_over_the_window() -> None:
    meter = ThroughputMeter(window_s=10)
    assert meter.rate(0, now=100.0) == 0.0
    assert meter.rate(50, now=105.0) == pytest.approx(10.0)
    assert meter.rate(100, now=110.0) == pytest.approx(10.0)
    assert meter.rate(100, now=125.0) == pytest.approx(0.0, abs=1e-9)  # nothing ran in the last 10 s


def test_gpu_memory_needs_torch_already_imported_with_cuda_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_memory() == []
    assert "torch" not in sys.modules  # it never imports torch itself

    class Cuda:
        initialized = False

        def is_available(self) -> bool:
            return True

        def is_initialized(self) -> bool:
            return self.initialized

        def device_count(self) -> int:
            return 1

        def get_device_properties(self, index: int) -> object:
            return types.SimpleNamespace(name="Fake H100", total_memory=80 * 2**30)

        def memory_allocated(self, index: int) -> int:
            return 3 * 2**30

        def memory_reserved(self, index: int) -> int:
            return 4 * 2**30

    cuda = Cuda()
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert gpu_memory() == []  # a worker that never touched the GPU
    cuda.initialized = True
    found = gpu_memory()
    assert found == [
        {"index": 0, "name": "Fake H100", "allocated": 3 * 2**30, "reserved": 4 * 2**30, "total": 80 * 2**30}
    ]
    assert parse_gpus(json.dumps(found)) == found
    assert parse_gpus("not json") == [] and parse_gpus(None) == []
