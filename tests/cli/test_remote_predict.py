"""``tungsten predict --url``: one prediction from a running server, or a whole file of inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.filesupport import gradient_png
from tests.support import MODELS, ROOT, Server, ServerFactory, audit_runs, tungsten, wait_for


@pytest.fixture(scope="module")
def files_server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "files")


def _one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and fragment in last, result.stderr


def test_one_prediction_sends_local_files_and_writes_output_files(files_server: Server, tmp_path: Path) -> None:
    picture = tmp_path / "in.png"
    picture.write_bytes(gradient_png())
    out = tmp_path / "out"
    result = tungsten("predict", "--url", files_server.url, "-i", f"image={picture}", "-i", "hold=0", "-o", str(out))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    saved = Path(output["echo"]["image"][0])
    assert saved.parent == out and saved.suffix == ".png"
    assert saved.read_bytes() == picture.read_bytes()
    assert output["image_size"] == [32, 24]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-i", "hold=-1"], "Invalid input: input 0, field 'hold'"),
        (["-i", "fail=true"], "failed: RuntimeError: failed on purpose"),
        (["-i", "image=no/such/picture.png"], "File not found"),
    ],
)
def test_errors_are_one_line(files_server: Server, args: list[str], fragment: str) -> None:
    _one_line_error(tungsten("predict", "--url", files_server.url, *args), fragment)


def test_option_mistakes_are_usage_errors(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("{}\n")
    both = tungsten("predict", str(MODELS / "files"), "--url", "http://127.0.0.1:1")
    assert both.returncode == 2 and "not both" in both.stderr
    no_url = tungsten("predict", "--input-file", str(inputs))
    assert no_url.returncode == 2 and "--input-file needs --url" in no_url.stderr
    bad_url = tungsten("predict", "--url", "localhost:3000")
    _one_line_error(bad_url, "http://HOST:PORT")


def _records(out: Path) -> list[dict]:
    lines = (out / "outputs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def test_an_input_file_killed_half_way_completes_on_a_second_run_without_resending(
    serve: ServerFactory, tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    server = serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(audit)})
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"x": i, "hold": 0.02}) + "\n" for i in range(500)))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "tungstenkit.cli",
        "predict",
        "--url",
        server.url,
        "--input-file",
        str(inputs),
        "-o",
        str(out),
    ]
    first = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: (out / "outputs.jsonl").exists() and len(_records(out)) >= 100,
            timeout=60,
            what="100 results of the first run",
        )
    finally:
        first.kill()
        first.communicate()
    done_before = {r["index"] for r in _records(out) if r["status"] == "success"}
    assert 100 <= len(done_before) < 500
    starts_before = len(audit_runs(audit))

    second = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "already done" in second.stderr and "input/s" in second.stderr  # the summary; the bar's rate

    records = _records(out)
    assert [r["index"] for r in records] == list(range(500))  # every input once, in input order
    assert all(r["status"] == "success" and r["output"]["x"] == r["index"] for r in records)
    resent = {x for _pid, xs in audit_runs(audit)[starts_before:] for x in xs}
    assert not resent & done_before  # finished inputs were not sent again
    assert resent | done_before >= set(range(500))


def test_failures_are_isolated_summarised_and_retried_on_the_next_run(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(MODELS / "recorder")
    values = [{"x": 1}, {"x": -2}, {"x": 3}, {"x": "three"}, "not an object", {"x": 5}, {"x": 6}]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("\n".join(json.dumps(v) for v in values) + "\n\n{broken\n")
    out = tmp_path / "out"
    result = tungsten("predict", "--url", server.url, "--input-file", str(inputs), "-o", str(out), "--concurrency", "2")
    _one_line_error(result, "4 of 8 inputs failed")
    assert "input 1 (line 2): ValueError: negative input -2" in result.stderr  # its batch-mates succeeded
    assert "input 3 (line 4): Invalid input: x:" in result.stderr
    assert "input 4 (line 5): line 5 is not a JSON object" in result.stderr
    assert "input 7 (line 9): line 9 is not JSON" in result.stderr
    records = _records(out)
    assert [r["status"] for r in records] == [
        "success",
        "failed",
        "success",
        "failed",
        "failed",
        "success",
        "success",
        "failed",
    ]
    # Fix two lines; the next run sends only what has not succeeded.
    values[1], values[3] = {"x": 2}, {"x": 4}
    inputs.write_text("\n".join(json.dumps(v) for v in values) + "\n")
    again = tungsten("predict", "--url", server.url, "--input-file", str(inputs), "-o", str(out))
    _one_line_error(again, "1 of 7 inputs failed")
    assert "2 succeeded, 1 failed, 4 already done" in again.stderr
    assert [r["output"]["x"] for r in _records(out) if r["status"] == "success"] == [1, 2, 3, 4, 5, 6]
