"""The model runner's file handling: downloads before predict, per-batch folders, output links."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.filesupport import FileServer, data_uri, png, wav
from tests.support import MODELS, wait_for
from tungstenkit._errors import PredictionCanceled, PredictionTimeout
from tungstenkit._loader import load_model
from tungstenkit._settings import Settings
from tungstenkit.worker.runner import ModelRunner


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's batch folders go (the system temp folder, as the worker uses it)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.log"
    monkeypatch.setenv("FILES_AUDIT", str(path))
    return path


@pytest.fixture
def make_runner() -> Iterator[Callable[..., ModelRunner]]:
    previous = signal.getsignal(signal.SIGUSR1)

    def make(**settings: Any) -> ModelRunner:
        runner = ModelRunner(load_model(MODELS / "files"), Settings(url_allowlist="127.0.0.1/32:*", **settings))
        runner.setup()
        runner.install_interrupt_handler()
        return runner

    yield make
    signal.signal(signal.SIGUSR1, previous)


def _inputs(runner: ModelRunner, *items: dict[str, Any]) -> list[Any]:
    return runner.decode_inputs(json.dumps(list(items)).encode())


def _audited_paths(audit: Path) -> list[Path]:
    return [Path(p) for line in audit.read_text().splitlines() for p in line.split()]


def _cancel_when(condition: Callable[[], object], runner: ModelRunner) -> threading.Thread:
    def go() -> None:
        wait_for(condition, 10, what="the batch to get going")
        runner.cancel(1)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def test_files_live_in_a_batch_folder_removed_after_success(
    make_runner, temp_root: Path, audit: Path, file_server: FileServer
) -> None:
    runner = make_runner()
    url = file_server.add("/cat.png", png())
    items = _inputs(runner, {"image": url, "audio": data_uri(wav(), "audio/wav")}, {"binary": "aGVsbG8="})
    outcomes = runner.predict(1, items)
    outputs = [json.loads(o.output) for o in outcomes]
    assert outputs[0]["echo"]["image"] == [data_uri(png(), "image/png")]  # the downloaded bytes
    assert outputs[0]["by_field"]["audio"] == data_uri(wav(), "audio/wav")
    assert outputs[1]["by_field"] == {"binary": "data:application/octet-stream;base64,aGVsbG8="}
    paths = _audited_paths(audit)
    assert len(paths) == 3 and all(p.parent.parent == temp_root for p in paths)
    assert not any(p.exists() for p in paths) and list(temp_root.iterdir()) == []


def test_the_batch_folder_is_removed_when_predict_fails(make_runner, temp_root: Path, audit: Path) -> None:
    runner = make_runner()
    with pytest.raises(RuntimeError, match="failed on purpose"):
        runner.predict(1, _inputs(runner, {"image": data_uri(png(), "image/png"), "fail": True}))
    assert len(_audited_paths(audit)) == 1 and list(temp_root.iterdir()) == []


def test_the_batch_folder_is_removed_when_predict_is_interrupted(make_runner, temp_root: Path, audit: Path) -> None:
    runner = make_runner(prediction_timeout_s=0.5)
    items = _inputs(runner, {"image": data_uri(png(), "image/png"), "hold": 30})
    with pytest.raises(PredictionTimeout):
        runner.predict(1, items)
    assert len(_audited_paths(audit)) == 1 and list(temp_root.iterdir()) == []


@pytest.mark.parametrize("count", [1, 3])  # one download runs inline, several on helper threads
def test_a_download_is_interrupted_by_cancel(make_runner, temp_root: Path, file_server: FileServer, count: int) -> None:
    runner = make_runner(url_read_timeout_s=60)
    items = _inputs(runner, *({"image": file_server.add(f"/slow{i}.png", png(), delay=60)} for i in range(count)))
    thread = _cancel_when(lambda: len(file_server.requests) == count, runner)
    with pytest.raises(PredictionCanceled):
        runner.predict(1, items)
    thread.join()
    assert list(temp_root.iterdir()) == []


def test_a_failed_download_fails_only_its_own_input(
    make_runner, temp_root: Path, file_server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner()
    good = file_server.add("/good.png", png())
    redirect = file_server.add("/evil", status=302, headers={"Location": "http://10.0.0.7/secret"})
    items = _inputs(
        runner, {"image": good}, {"image": redirect}, {"audio": file_server.url("/gone.wav")}, {"image": good}
    )
    outcomes = runner.predict(1, items)
    assert [o.failure is None for o in outcomes] == [True, False, False, True]
    # A refused redirect and a 404 read the same to the client; the log says which.
    assert outcomes[1].failure is not None and outcomes[1].failure.message(1) == (
        "URLFetchFailed: input 1, field 'image': the URL could not be fetched"
    )
    assert outcomes[2].failure is not None and outcomes[2].failure.message(2) == (
        "URLFetchFailed: input 2, field 'audio': the URL could not be fetched"
    )
    assert f"{redirect} could not be fetched: URLRefused: 10.0.0.7 is not a public address (10.0.0.0/8" in caplog.text
    assert f"{file_server.url('/gone.wav')} could not be fetched: FetchError: the server answered 404" in caplog.text
    assert json.loads(outcomes[3].output)["image_size"] == [8, 6]
    assert list(temp_root.iterdir()) == []


def test_output_files_as_links_travel_with_the_outcome(make_runner, temp_root: Path) -> None:
    runner = make_runner(output_files="url", public_url="https://models.example.com")
    (outcome,) = runner.predict(1, _inputs(runner, {"image": data_uri(png(), "image/png")}))
    output = json.loads(outcome.output)
    names = {f.name: f for f in outcome.files}
    link = output["echo"]["image"][0]
    assert link.startswith("https://models.example.com/files/")
    assert names[link.rsplit("/", 1)[1]].data == png() and names[link.rsplit("/", 1)[1]].mime_type == "image/png"
    assert len(names) == 2  # the echo, and the copy read from .path for by_field


def test_out_of_memory_errors_are_told_from_other_failures() -> None:
    import torch

    from tungstenkit.worker.runner import is_out_of_memory

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))  # torch before 1.13
    assert not is_out_of_memory(RuntimeError("shapes do not match"))
    assert not is_out_of_memory(MemoryError())


def test_a_batch_run_again_finds_its_files_again(make_runner, temp_root: Path, file_server: FileServer) -> None:
    # A batch that failed (or ran out of GPU memory) runs again in halves: the files of
    # its first try went with that try's folder, and are written anew.
    runner = make_runner()
    items = _inputs(
        runner, {"image": data_uri(png(), "image/png")}, {"binary": file_server.add("/again.bin", b"again")}
    )

    def outputs(part: list[Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in json.loads(o.output).items() if k != "paths"} for o in runner.predict(1, part)]

    first = outputs(items)
    assert outputs(items[:1]) + outputs(items[1:]) == first
    assert first[1]["by_field"]["binary"] == data_uri(b"again", "application/octet-stream")
    assert list(temp_root.iterdir()) == []
