"""``Client`` against a real ``tungsten serve``: files in and out, typed errors, cancel, retries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.filesupport import gif_video, gradient_png, png, wav
from tests.support import MODELS, Server, ServerFactory, audit_runs, wait_for
from tungstenkit import Audio, Binary, Client, File, Image, Video
from tungstenkit._redis_server import free_port
from tungstenkit.client import (
    InvalidInput,
    PredictionCanceled,
    PredictionFailed,
    PredictionNotFound,
    TransportError,
    WaitTimeout,
)


@pytest.fixture(scope="module")
def files_server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "files")


@pytest.fixture
def client(files_server: Server) -> Client:
    with Client(files_server.url, timeout=30) as client:
        yield client


def test_files_go_in_from_paths_bytes_pil_and_file_objects_and_come_back_as_files(
    client: Client, tmp_path: Path
) -> None:
    picture = tmp_path / "in.png"
    picture.write_bytes(gradient_png())
    output = client.predict(
        {
            "image": picture,
            "audio": Audio.from_bytes(wav()),
            "video": gif_video(),
            "binary": b"\x00\x01 raw bytes",
        }
    )
    echo = output["echo"]
    assert isinstance(echo["image"][0], Image) and echo["image"][0].read_bytes() == picture.read_bytes()
    assert isinstance(echo["audio"][0], Audio) and echo["audio"][0].read_bytes() == wav()
    assert isinstance(echo["video"][0], Video) and echo["video"][0].read_bytes() == gif_video()
    assert isinstance(echo["binary"][0], Binary) and echo["binary"][0].read_bytes() == b"\x00\x01 raw bytes"
    assert all(isinstance(f, Binary) for f in output["by_field"].values())
    assert output["image_size"] == [32, 24]
    with PILImage.open(picture) as original:
        assert echo["image"][0].to_pil_image().tobytes() == original.convert("RGB").tobytes()
    saved = echo["image"][0].save(tmp_path / "out.png")
    assert saved == tmp_path / "out.png" and saved.read_bytes() == picture.read_bytes()
    into_folder = echo["image"][0].save(tmp_path)
    assert into_folder.parent == tmp_path and into_folder.suffix == ".png"

    with PILImage.open(picture) as pil:
        from_pil = client.predict({"image": pil.copy()})
    assert from_pil["image_size"] == [32, 24]
    from_file = client.predict({"image": File.from_path(picture), "binary": Binary.from_bytes(b"abc")})
    assert from_file["echo"]["binary"][0].read_bytes() == b"abc"


def test_a_list_of_inputs_gives_the_list_of_outputs_in_order(client: Client) -> None:
    sizes = [(4 + i, 3) for i in range(6)]
    outputs = client.predict([{"image": png(size)} for size in sizes])
    assert [o["image_size"] for o in outputs] == [list(s) for s in sizes]


def test_output_files_sent_as_links_are_downloaded(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(MODELS / "files", env={"TUNGSTEN_OUTPUT_FILES": "url"})
    raw = server.predict([{"image": "data:image/png;base64," + __import__("base64").b64encode(png()).decode()}])
    assert raw["outputs"][0]["echo"]["image"][0].startswith("/files/")
    with Client(server.url) as client:
        output = client.predict({"image": png()})
    assert isinstance(output["echo"]["image"][0], Image)
    assert output["echo"]["image"][0].read_bytes() == png()


def test_invalid_input_is_a_typed_error_with_the_detail(client: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        client.predict([{"hold": 0}, {"hold": -1}])
    error = caught.value
    assert error.status_code == 422
    assert [e["loc"] for e in error.errors] == [["body", 1, "hold"]]
    assert list(error.by_input()) == [1]
    assert "input 1, field 'hold'" in str(error)


def test_a_failed_prediction_is_a_typed_error_with_the_message(client: Client) -> None:
    with pytest.raises(PredictionFailed) as caught:
        client.predict({"fail": True})
    assert caught.value.error_message == "RuntimeError: failed on purpose"
    assert caught.value.prediction.status == "failed"
    assert not isinstance(caught.value, PredictionCanceled)


def test_submit_get_wait_cancel(client: Client) -> None:
    prediction_id = client.submit({"hold": 30})
    wait_for(lambda: client.get(prediction_id).status == "running", what="the prediction to start")
    with pytest.raises(WaitTimeout) as caught:
        client.wait(prediction_id, timeout=0.2)
    assert caught.value.prediction.status == "running"
    assert client.cancel(prediction_id).canceled
    ended = client.wait(prediction_id, timeout=10)
    assert ended.status == "failed" and ended.error_message == "Canceled" and ended.outputs is None
    with pytest.raises(PredictionCanceled):
        from tungstenkit.client._operations import raise_for_failure

        raise_for_failure(ended)
    with pytest.raises(PredictionNotFound):
        client.get("0" * 32)
    with pytest.raises(PredictionNotFound):
        client.wait("0" * 32)


def test_stream_follows_a_prediction_of_a_real_server_to_its_end(client: Client) -> None:
    prediction_id = client.submit({})
    updates = list(client.stream(prediction_id))
    assert updates[0].status == "pending" and updates[-1].ended and updates[-1].succeeded
    assert updates[-1] == client.get(prediction_id)
    with pytest.raises(PredictionNotFound):
        list(client.stream("f" * 32))


def test_health_and_schema(client: Client) -> None:
    assert client.health()["status"] == "ok"
    schema = client.schema()
    assert schema["model_class"] == "FilesModel"
    assert schema["input_schema"]["properties"]["hold"]["maximum"] == 120


def test_an_unreachable_server_is_a_transport_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=1) as client,
        pytest.raises(TransportError, match="ConnectError"),
    ):
        client.health()


def test_a_submit_refused_with_429_is_retried_and_runs_once(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    server = serve(MODELS / "recorder", env={"TUNGSTEN_MAX_QUEUED_INPUTS": "2", "RECORDER_AUDIT": str(audit)})
    # Two inputs that hold the queue's two places for a while: every submit meanwhile gets 429.
    blocker = server.client.post("/predictions", json=[{"x": 100, "hold": 1.0}, {"x": 101, "hold": 1.0}])
    assert blocker.status_code == 200
    refused = server.client.post("/predictions", json=[{"x": 99}])
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(x: int) -> None:
        try:
            with Client(server.url, retries=100) as client:
                results[x] = client.predict({"x": x})["x"]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(x,)) for x in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results == {x: x for x in range(6)}
    server.result(blocker.json()["prediction_id"])
    done = sorted(x for _pid, xs in audit_runs(audit, "done") for x in xs)
    assert done == [0, 1, 2, 3, 4, 5, 100, 101]  # each ran once: no retried submit ran twice


def test_timeouts_of_long_polls_leave_room_for_the_hold(client: Client) -> None:
    short = Client(client.url, timeout=0.5)
    try:
        prediction_id = short.submit({"hold": 1.5})
        assert short.wait(prediction_id, timeout=20).status == "success"
    finally:
        short.close()


def test_a_bad_url_is_refused_at_once() -> None:
    from tungstenkit.client import ClientError

    with pytest.raises(ClientError, match="http://HOST:PORT"):
        Client("localhost:3000")


def test_submit_and_predict_take_a_priority_and_a_deadline(recorder_server: Server) -> None:
    with Client(recorder_server.url, timeout=30) as client:
        assert client.predict({"x": 3}, priority="high", deadline_s=30)["x"] == 3
        blocker = client.submit({"x": 1, "hold": 1.5}, priority="low")
        wait_for(lambda: client.get(blocker).status == "running", what="the blocker to start")
        with pytest.raises(PredictionFailed) as caught:
            client.predict({"x": 2}, deadline_s=0.2)
        assert caught.value.error_message == "Deadline exceeded"
        with pytest.raises(InvalidInput) as refused:
            client.submit({"x": 4}, priority="urgent")
        assert refused.value.errors[0]["loc"] == ["query", "priority"]
        assert client.wait(blocker).status == "success"
