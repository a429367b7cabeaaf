"""The bench scripts run: a tiny load against our server (Tungstenkit only if bench/.venv-tk exists).

These check that the scripts work and that their figures are filled in, never how fast
anything is: timings are recorded by the scripts (BENCHMARKS.md), not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
NOOP = BENCH / "models" / "noop"
sys.path.insert(0, str(BENCH))

from servers import OurServer, TungstenkitServer


def loadgen(server: object, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--url",
        server.url,
        "--mode",
        server.mode,  # type: ignore[attr-defined]
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--json",
        str(out),
        *args,
    ]
    for name, pid in server.pids().items():  # type: ignore[attr-defined]
        command += ["--pid", f"{name}={pid}"]
    if server.redis_address:  # type: ignore[attr-defined]
        command += ["--redis", server.redis_address]  # type: ignore[attr-defined]
    subprocess.run(command, check=True, timeout=60)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurServer]:
    server = OurServer(NOOP, tmp_path_factory.mktemp("bench-ours"))
    try:
        yield server.start()
    finally:
        server.stop()


def test_closed_loop_fills_every_figure(ours: OurServer, tmp_path: Path) -> None:
    result = loadgen(ours, tmp_path, "--clients", "4", "--inputs", "2")
    assert result["predictions"] > 0
    assert set(result["statuses"]) == {"success"}
    assert result["inputs"] == 2 * result["predictions"]
    assert result["http_per_prediction"] >= 2
    assert result["latency_ms"]["p50"] is not None and result["latency_ms"]["p99"] >= result["latency_ms"]["p50"]
    assert result["batches"]["count"] > 0 and 1 <= result["batches"]["mean"] <= 32
    assert sum(result["batches"]["histogram"].values()) == result["batches"]["count"]
    assert result["redis_commands_per_input"] > 0 and "evalsha" in result["redis_commands"]
    assert {"api", "worker-1", "redis"} <= set(result["cpu_s"])
    assert result["cpu_s"]["api"] is not None


def test_open_loop_counts_arrivals_in_the_window(ours: OurServer, tmp_path: Path) -> None:
    result = loadgen(ours, tmp_path, "--rate", "100", "--timeout", "10")
    assert result["load"]["rate"] == 100
    assert result["predictions"] > 20
    assert set(result["statuses"]) == {"success"}


def test_direct_loop_reports_inputs_per_second() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "direct.py"), str(NOOP), "--batch", "8", "--seconds", "0.1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert result["batch"] == 8 and result["inputs_per_s"] > 0 and result["inputs_per_s_serialised"] > 0


def test_scenario_script_writes_results_and_report(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "a",
            "report",
            "--quick",
            "--no-tk",
            "--duration",
            "0.6",
            "--warmup",
            "0.2",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    record = json.loads((tmp_path / "a.json").read_text())
    assert [r["server"] for r in record["runs"]] == ["ours"]
    assert record["runs"][0]["predictions"] > 0 and record["direct"]["inputs_per_s"] > 0
    assert "| ours |" in (tmp_path / "a.md").read_text()
    assert "Targets" in (tmp_path / "summary.md").read_text()


def test_api_keys_script_measures_each_mode_with_no_refusal(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(BENCH / "api_keys.py"), "--quick", "--clients", "4", "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        timeout=180,
        stdout=subprocess.DEVNULL,
    )
    runs = json.loads((tmp_path / "api_keys.json").read_text())
    assert [r["mode"] for r in runs] == ["off", "on", "on+limits"]
    for run in runs:
        for load in ("post_1", "post_many", "get_many"):
            assert set(run[load]["statuses"]) == {"200"} and run[load]["requests"] > 0, (run["mode"], load)
    assert "Requests answered other than 200 in all runs: 0." in (tmp_path / "api_keys.md").read_text()


@pytest.mark.skipif(not TungstenkitServer.available(), reason="bench/setup_tungstenkit.sh has not been run")
def test_polling_mode_against_tungstenkit(tmp_path: Path) -> None:
    server = TungstenkitServer(NOOP, tmp_path)
    try:
        server.start()
        result = loadgen(server, tmp_path, "--clients", "2", "--poll-ms", "5")
    finally:
        server.stop()
    assert result["predictions"] > 0 and set(result["statuses"]) == {"success"}
    assert result["batches"]["count"] > 0 and result["redis_commands_per_input"] is None


def test_the_streaming_bench_fills_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "streaming.jsonl"
    for what, args in (
        ("latency", ["--rounds", "1", "--clients", "4", "--steps", "5", "--step-ms", "5"]),
        ("idle", ["--streams", "20", "--health-requests", "10", "--hold-s", "0.5"]),
    ):
        subprocess.run(
            [sys.executable, str(BENCH / "streaming.py"), what, *args, "--out", str(out)],
            check=True,
            timeout=120,
            capture_output=True,
        )
    latency, idle = (json.loads(line) for line in out.read_text().splitlines())
    assert latency["output_events"] == 4 * 5 and latency["mean_batch"] >= 1
    assert latency["added_latency_ms"]["p99"] >= latency["added_latency_ms"]["p50"] > 0
    assert idle["streams"] == 20 and idle["health_with_streams"]["p50_ms"] > 0
