"""Files through the running server: every type in and out, URLs behind the guard, limits, cleanup.

Media are made here: PNG and JPEG with Pillow, WAV with the stdlib ``wave`` module, and
for video an animated GIF (no video encoder is installed; Pillow writes GIFs).
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from tests.filesupport import FileServer, data_uri, gif_video, gradient_png, jpeg, png, png_bomb, wav
from tests.filesupport import file_server as serve_files
from tests.support import EXAMPLES, MODELS, ROOT, Server, ServerFactory, wait_for
from tungstenkit._redis_server import free_port


@pytest.fixture(scope="module")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def remote() -> Iterator[FileServer]:
    yield from serve_files()


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory, files_root: Path, remote: FileServer) -> Server:
    (files_root / "tmp").mkdir()
    env = {
        "TMPDIR": str(files_root / "tmp"),
        "FILES_AUDIT": str(files_root / "audit.log"),
        "TUNGSTEN_URL_ALLOWLIST": f"127.0.0.1:{remote.port}",
        "TUNGSTEN_MAX_FILE_BYTES": "200000",
        "TUNGSTEN_MAX_BODY_BYTES": "1000000",
    }
    return module_serve(MODELS / "files", env=env)


def _image(uri: str) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def _leftovers(files_root: Path) -> list[Path]:
    return list((files_root / "tmp").glob("tungsten-batch*"))


def _audited(files_root: Path) -> list[str]:
    audit = files_root / "audit.log"
    return audit.read_text().splitlines() if audit.exists() else []


def test_every_file_type_round_trips(server: Server, files_root: Path) -> None:
    mask = PILImage.new("L", (8, 6), 0)
    mask.paste(3, (2, 2, 5, 4))  # faint, yet non-zero: becomes 255
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    first = {
        "image": data_uri(png(), "image/png"),
        "audio": base64.b64encode(wav()).decode(),  # plain base64
        "video": data_uri(gif_video(), "image/gif"),
        "binary": data_uri(os.urandom(300), "application/octet-stream"),
        "masked": {"image": data_uri(png(), "image/png"), "mask": data_uri(buffer.getvalue(), "image/png")},
    }
    second = {"image": data_uri(jpeg((5, 7)), "image/jpeg")}
    result = server.predict([first, second])
    assert result["status"] == "success", result
    one, two = result["outputs"]
    assert one["echo"] == {
        "image": [first["image"]],
        "audio": [data_uri(wav(), "audio/wav")],
        "video": [first["video"]],
        "binary": [first["binary"]],
    }
    assert one["by_field"]["audio"] == data_uri(wav(), "audio/wav")  # read back from .path, a dict of files
    assert one["by_field"]["video"] == first["video"] and one["by_field"]["binary"] == first["binary"]
    assert _image(one["by_field"]["masked.image"]).size == (8, 6)
    assert one["image_size"] == [8, 6] and one["mask_values"] == [0, 255]
    binarised = _image(one["mask"][0])
    assert binarised.mode == "L" and binarised.getpixel((3, 3)) == 255 and binarised.getpixel((0, 0)) == 0
    assert _image(two["echo"]["image"][0]).format == "JPEG" and two["image_size"] == [5, 7]
    assert two["echo"]["audio"] == [] and two["by_field"] == {"image": second["image"]}
    paths = [Path(p) for p in one["paths"] + two["paths"]]
    assert len(paths) == 7
    assert all(p.is_relative_to(files_root / "tmp") and not p.is_relative_to(ROOT) for p in paths)
    wait_for(lambda: not any(p.exists() for p in paths) and not _leftovers(files_root), 10, what="batch folders gone")


def test_url_inputs_are_fetched_through_the_allowlist(server: Server, remote: FileServer) -> None:
    picture = remote.add("/picture.png", gradient_png(), headers={"Content-Type": "image/png"})
    sound = remote.add("/sound", wav())  # no type, no extension: sniffed
    mask = remote.add("/mask.png", png((32, 24), 0, "L"))
    result = server.predict([{"image": picture, "audio": sound, "masked": {"image": picture, "mask": mask}}])
    assert result["status"] == "success", result
    output = result["outputs"][0]
    assert output["echo"]["image"] == [data_uri(gradient_png(), "image/png")]
    assert output["echo"]["audio"] == [data_uri(wav(), "audio/wav")]
    assert output["image_size"] == [32, 24] and output["mask_values"] == [0]
    assert remote.requests.count("/picture.png") == 1  # one download per distinct URL and batch


FETCH_FAILED = "URLFetchFailed: input {}, field '{}': the URL could not be fetched"


def test_a_redirect_into_a_private_range_fails_only_that_prediction(server: Server, remote: FileServer) -> None:
    evil = remote.add("/evil.png", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    good = remote.add("/fine.png", png())
    bad_id = server.client.post("/predictions", json=[{"image": good}] * 3 + [{"image": evil}]).json()["prediction_id"]
    good_id = server.client.post("/predictions", json=[{"image": good}]).json()["prediction_id"]
    bad = server.result(bad_id)
    assert bad["status"] == "failed" and bad["outputs"] is None
    assert bad["error_message"] == FETCH_FAILED.format(3, "image")
    assert server.result(good_id)["status"] == "success"
    missing = server.predict([{"binary": remote.url("/nowhere")}])
    assert missing["status"] == "failed" and missing["error_message"] == FETCH_FAILED.format(0, "binary")
    log = server.log()
    assert "Traceback" not in log  # a failed download is a result, not a crash
    assert f"URL input {evil} could not be fetched: URLRefused: 169.254.169.254 is not a public address" in log
    assert f"URL input {remote.url('/nowhere')} could not be fetched: FetchError: the server answered 404" in log


def test_every_failed_url_reads_the_same_to_the_client(server: Server, remote: FileServer) -> None:
    """Told apart, these would make the server a scanner of the network around it."""
    listening = socket.create_server(("127.0.0.1", 0))  # another service on the allow-listed address
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        port = listening.getsockname()[1]
        urls = {
            "a redirect to another port, open": remote.add(
                "/p1", status=302, headers={"Location": f"http://127.0.0.1:{port}/"}
            ),
            "a redirect to another port, closed": remote.add(
                "/p2", status=302, headers={"Location": f"http://127.0.0.1:{closed_port}/"}
            ),
            "a name for another port": f"http://localhost:{port}/",
            "a 404": remote.url("/absent"),
            "a 500": remote.add("/broken", status=500),
            "a hang-up": remote.add("/hang-up", hang_up=True),
            "a name that does not resolve": "http://no-such-host.invalid/x",
        }
        messages = {what: server.predict([{"binary": url}])["error_message"] for what, url in urls.items()}
        assert messages == dict.fromkeys(urls, FETCH_FAILED.format(0, "binary"))
        log = server.log()
        for url in urls.values():
            assert f"URL input {url} could not be fetched: " in log
        for detail in (
            "127.0.0.1 is not a public address",
            "the server answered 404",
            "the server answered 500",
            "Remote end closed connection",
            "cannot resolve no-such-host.invalid",
        ):
            assert detail in log
        listening.setblocking(False)
        with pytest.raises(BlockingIOError):
            listening.accept()  # nobody connected to the other service
    finally:
        listening.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://10.0.0.1/cat.png", "10.0.0.1 is not a public address (10.0.0.0/8: Private-Use, RFC 1918)"),
        ("http://[::1]:3000/cat.png", "::1/128: Loopback Address"),
        (f"http://127.0.0.1:{free_port()}/cat.png", "127.0.0.0/8: Loopback"),  # not the allow-listed port
        ("ftp://example.com/cat.png", "Unsupported URI scheme 'ftp'"),
        ("file:///etc/passwd", "not accepted here"),
        ("/etc/passwd", "Invalid file input"),
        ("~/.ssh/id_rsa", "Invalid file input"),
        (data_uri(jpeg(), "image/png"), "declares image/png but its bytes are image/jpeg"),
        (data_uri(wav(), "image/png"), "declares image/png but its bytes are audio/wav"),
        (base64.b64encode(wav()).decode(), "not an image"),
        (data_uri(png_bomb(), "image/png"), "pixels"),
        # 14 KB of 1-bit PNG, 9,400 x 9,400 pixels: under Pillow's limit, over the default.
        (data_uri(png_bomb(9400, 9400), "image/png"), "more than 40000000 pixels"),
    ],
)
def test_inputs_refused_up_front_are_422(server: Server, value: str, message: str) -> None:
    response = server.client.post("/predictions", json=[{"binary": "aGk="}, {"image": value}])
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", 1, "image"] and message in detail["msg"]


def test_oversized_bodies_and_files_are_413(server: Server) -> None:
    response = server.client.post("/predictions", json=[{"binary": data_uri(b"x" * 200_001, "text/plain")}])
    assert response.status_code == 413
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", 0, "binary"] and "200001 bytes; the limit is 200000" in detail["msg"]
    too_big = [{"binary": data_uri(b"y" * 150_000, "text/plain")} for _ in range(6)]  # each fits; together not
    assert server.client.post("/predictions", json=too_big).status_code == 413


def test_a_field_bounds_its_own_files(server: Server, remote: FileServer) -> None:
    def refused(inputs: dict[str, str]) -> tuple[int, str]:
        response = server.client.post("/predictions", json=[inputs])
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["body", 0, *inputs]
        return response.status_code, detail["msg"]

    assert refused({"thumbnail": data_uri(png((20, 10)), "image/png")}) == (
        422,
        "the image is 20x10 = 200 pixels; this field takes at most 100",
    )
    assert refused({"clip": data_uri(wav(1.5, rate=4000), "audio/wav")}) == (
        422,
        "the file lasts 1.5 s; this field takes at most 1 s",
    )
    assert refused({"clip": data_uri(wav(1.0, rate=16000), "audio/wav")}) == (
        413,
        "the file is 32044 bytes; this field takes at most 20000",
    )
    status, message = refused({"clip": data_uri(b"OggS" + bytes(60), "audio/ogg")})
    assert status == 422 and "duration cannot be read" in message
    # The same bounds hold for URL inputs, once downloaded, before the model sees them.
    far = server.predict([{"thumbnail": remote.add("/wide.png", png((20, 10)))}])
    assert far["error_message"] == (
        "ImageTooLarge: input 0, field 'thumbnail': the image is 20x10 = 200 pixels; this field takes at most 100"
    )
    fine = [{"thumbnail": data_uri(png((10, 10)), "image/png"), "clip": data_uri(wav(0.5), "audio/wav")}]
    assert server.predict(fine)["status"] == "success"
    schema = server.client.get("/").json()["input_schema"]["properties"]
    assert schema["thumbnail"]["x-tungsten-limits"] == {"max_pixels": 100}


def test_a_slow_url_delays_only_its_own_prediction(server: Server, remote: FileServer) -> None:
    # Six URLs that take 15 s each (one byte every half second), more than a batch, and one worker.
    body = wav()[:30]
    slow = [remote.add(f"/drip{n}", body, drip=0.5) for n in range(6)]
    waiting = [server.client.post("/predictions", json=[{"binary": url}]).json()["prediction_id"] for url in slow]
    wait_for(lambda: all(f"/drip{n}" in remote.requests for n in range(2)), 10, what="two downloads to begin")
    # An unrelated prediction runs while they download, and so does a batch of them.
    fast = server.predict([{"image": data_uri(png(), "image/png")}], wait=10)
    assert fast["status"] == "success"
    assert server.predict([{"audio": data_uri(wav(), "audio/wav")}] * 6, wait=10)["status"] == "success"
    assert [server.result(p, wait=0)["status"] for p in waiting] == ["pending"] * 6
    # At most two downloads at once from one host: the others have not begun.
    assert not any(f"/drip{n}" in remote.requests for n in range(2, 6))
    # A prediction canceled while its URL downloads, or waits to, never runs; the others finish.
    for prediction_id in [waiting[0], *waiting[2:]]:
        server.client.post(f"/predictions/{prediction_id}/cancel")
        assert server.result(prediction_id, wait=0)["error_message"] == "Canceled"
    result = server.result(waiting[1], wait=60)
    assert result["status"] == "success", result
    assert result["outputs"][0]["echo"]["binary"] == [data_uri(body, "audio/wav")]


def test_a_worker_killed_while_downloading_loses_nothing(server: Server, remote: FileServer) -> None:
    body = wav()[:20]
    url = remote.add("/drip-killed", body, drip=0.2)
    prediction_id = server.client.post("/predictions", json=[{"binary": url}]).json()["prediction_id"]
    wait_for(lambda: "/drip-killed" in remote.requests, 10, what="the download to begin")
    pid = int(server.client.get("/health").json()["workers"][0]["pid"])
    os.kill(pid, signal.SIGKILL)  # the entry is this worker's (read, not yet ready) when it dies
    result = server.result(prediction_id, wait=60)
    assert result["status"] == "success", result
    assert result["outputs"][0]["echo"]["binary"] == [data_uri(body, "audio/wav")]
    assert remote.requests.count("/drip-killed") == 2  # downloaded again by the worker that took over


def test_a_decompression_bomb_by_url_fails_without_memory_blow_up(server: Server, remote: FileServer) -> None:
    bomb = remote.add("/bomb.png", png_bomb())
    result = server.predict([{"image": bomb}])
    assert result["status"] == "failed"
    assert result["error_message"].startswith("ImageTooLarge: input 0, field 'image': the image")
    pid = int(server.client.get("/health").json()["workers"][0]["pid"])
    peak_kib = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    assert peak_kib < 1024 * 1024  # decoding it would have taken 10 GB
    assert server.predict([{"image": data_uri(png(), "image/png")}])["status"] == "success"


def test_temp_folders_are_gone_after_failure_and_cancel(server: Server, files_root: Path) -> None:
    seen = len(_audited(files_root))
    failed = server.predict([{"image": data_uri(png(), "image/png"), "fail": True}])
    assert failed["status"] == "failed" and failed["error_message"] == "RuntimeError: failed on purpose"
    held = server.client.post("/predictions", json=[{"audio": data_uri(wav(), "audio/wav"), "hold": 60}])
    prediction_id = held.json()["prediction_id"]
    wait_for(lambda: len(_audited(files_root)) == seen + 2, 20, what="the held batch to open its files")
    server.client.post(f"/predictions/{prediction_id}/cancel")
    assert server.result(prediction_id)["error_message"] == "Canceled"
    paths = [Path(p) for line in _audited(files_root)[seen:] for p in line.split()]
    assert len(paths) == 2
    wait_for(lambda: not any(p.exists() for p in paths) and not _leftovers(files_root), 20, what="batch folders gone")


# -- the example, with default settings ----------------------------------------------------


@pytest.fixture(scope="module")
def example(module_serve: ServerFactory) -> Server:
    return module_serve(EXAMPLES / "image_filter")


def _pixels(uri: str) -> Any:
    import numpy as np

    return np.asarray(_image(uri).convert("RGB"), dtype=np.int16)


def test_the_image_filter_example(example: Server) -> None:
    picture = data_uri(gradient_png(), "image/png")
    filters = ["blur", "sharpen", "edges", "invert"]
    result = example.predict([{"image": picture, "filter": name} for name in filters])
    assert result["status"] == "success", result
    original = _pixels(picture)
    outputs = {name: _pixels(o["image"]) for name, o in zip(filters, result["outputs"])}
    assert all(o["image"].startswith("data:image/png;base64,") for o in result["outputs"])
    assert all(p.shape == original.shape for p in outputs.values())
    assert (outputs["invert"] == 255 - original).all()
    assert all((outputs[name] != original).any() for name in ("blur", "sharpen", "edges"))
    bad = example.client.post("/predictions", json=[{"image": picture, "filter": "sepia"}])
    assert bad.status_code == 422


def test_the_default_refuses_loopback_urls(example: Server, remote: FileServer) -> None:
    url = remote.add("/local.png", gradient_png())
    literal = example.client.post("/predictions", json=[{"image": url}])
    assert literal.status_code == 422 and "127.0.0.1 is not a public address (127.0.0.0/8: Loopback" in literal.text
    by_name = example.predict([{"image": remote.url("/local.png", host="localhost")}])
    assert by_name["status"] == "failed" and by_name["error_message"] == FETCH_FAILED.format(0, "image")
    assert "could not be fetched: URLRefused: localhost resolves to" in example.log()
    assert "/local.png" not in remote.requests


# -- output files as links -------------------------------------------------------------------


def test_output_files_as_links_expire_with_their_prediction(serve: ServerFactory) -> None:
    server = serve(MODELS / "files", env={"TUNGSTEN_OUTPUT_FILES": "url", "TUNGSTEN_RESULT_TTL_S": "3"})
    sent = {
        "image": data_uri(png(), "image/png"),
        "video": data_uri(gif_video(), "image/gif"),
        "binary": "PGgxPmhpPC9oMT4=",
    }
    result = server.predict([sent])
    assert result["status"] == "success", result
    output = result["outputs"][0]
    links = {
        "image": output["echo"]["image"][0],
        "video": output["echo"]["video"][0],
        "binary": output["echo"]["binary"][0],
    }
    assert all(link.startswith("/files/") for link in links.values())
    image = server.client.get(links["image"])
    assert image.status_code == 200 and image.content == png() and image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    video = server.client.get(links["video"])
    assert video.content == gif_video() and video.headers["content-type"] == "image/gif"
    download = server.client.get(links["binary"])  # bytes of unknown type are never shown inline
    assert download.content == b"<h1>hi</h1>" and download.headers["content-disposition"].startswith("attachment")
    assert server.client.get("/files/" + "A" * 32 + ".png").status_code == 404
    assert server.client.get("/files/../../etc/passwd").status_code == 404
    prediction = f"/predictions/{server.client.post('/predictions', json=[sent]).json()['prediction_id']}"
    assert server.result(prediction.rsplit("/", 1)[1])["status"] == "success"
    wait_for(lambda: server.client.get(prediction).status_code == 404, 15, what="the prediction to expire")
    assert server.client.get(links["image"]).status_code == 404
