from __future__ import annotations

import base64
import io

import pytest
from PIL import Image as PILImage
from pydantic import ValidationError

from tests.filesupport import FileServer, data_uri, gif_video, jpeg, png, png_bomb, wav
from tungstenkit import Audio, BaseIO, Binary, Image, MaskedImage, Video
from tungstenkit._errors import URLRefused
from tungstenkit._fetch import Allowlist, FetchPolicy
from tungstenkit._files import (
    ALLOW_LOCAL_FILES,
    DEFER_DECODING,
    FILE_POLICY,
    OUTPUT_FILE_SINK,
    FilePolicy,
    materialize_files_in,
    sniff_mime_type,
)
from tungstenkit._prepare import prepare_inputs
from tungstenkit.worker.outputs import OutputFileSink


class Input(BaseIO):
    image: Image


class Output(BaseIO):
    image: Image
    files: list[Binary]


def _png_bytes(color: str = "red", size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_data_uri_and_plain_base64_inputs() -> None:
    data = _png_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert Input.model_validate({"image": uri}).image.read_bytes() == data
    from_plain = Input.model_validate({"image": base64.b64encode(data).decode()}).image
    assert from_plain.uri == uri  # plain base64 becomes a data URI with the sniffed type
    assert from_plain.to_pil_image().size == (4, 3)


@pytest.mark.parametrize("value", ["data:image/png;base64,@@@", "not base64!", "data:image/png;base64"])
def test_malformed_file_inputs_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        Input.model_validate({"image": value})


def test_local_paths_are_refused_unless_allowed(tmp_path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(_png_bytes())
    for value in (str(path), path.as_uri(), "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(ValidationError, match="not accepted|Invalid file input"):
            Input.model_validate({"image": value})
    allowed = Input.model_validate({"image": str(path)}, context={ALLOW_LOCAL_FILES: True}).image
    assert allowed.path == path
    with pytest.raises(ValidationError, match="File not found"):
        Input.model_validate({"image": str(tmp_path / "missing.png")}, context={ALLOW_LOCAL_FILES: True})


def test_outputs_serialize_as_data_uris(tmp_path) -> None:
    on_disk = tmp_path / "out.png"
    on_disk.write_bytes(_png_bytes("blue"))
    output = Output(
        image=Image.from_pil_image(PILImage.new("RGB", (2, 2), "green")),
        files=[Binary.from_bytes(b"abc"), Binary.from_path(on_disk)],
    )
    dumped = output.model_dump(mode="json")
    assert dumped["image"].startswith("data:image/png;base64,")
    assert dumped["files"][0] == "data:application/octet-stream;base64,YWJj"
    assert dumped["files"][1].startswith("data:image/png;base64,")  # read from the path


def test_path_materializes_in_the_given_folder(tmp_path) -> None:
    image = Input.model_validate({"image": base64.b64encode(_png_bytes()).decode()}).image
    with materialize_files_in(tmp_path):
        path = image.path
    assert path.parent == tmp_path and path.suffix == ".png"
    assert path.read_bytes() == _png_bytes()


def test_pil_round_trip() -> None:
    original = PILImage.new("RGB", (5, 7), (10, 20, 30))
    image = Image.from_pil_image(original)
    assert image.mime_type == "image/png"
    assert image.to_pil_image().tobytes() == original.tobytes()


def test_mime_sniffing() -> None:
    assert sniff_mime_type(_png_bytes()) == "image/png"
    assert sniff_mime_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_mime_type(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert sniff_mime_type(b"hello") is None


# -- URL inputs, limits and content checks ------------------------------------------------

LOOPBACK = FilePolicy(fetch=FetchPolicy(allowlist=Allowlist.parse("127.0.0.1/32:*"), read_timeout_s=5))


class Everything(BaseIO):
    image: Image | None = None
    audio: Audio | None = None
    video: Video | None = None
    binary: Binary | None = None
    masked: MaskedImage | None = None


def _error(values: dict, **context: object) -> dict:
    with pytest.raises(ValidationError) as caught:
        Everything.model_validate(values, context=context or None)
    return caught.value.errors()[0]


def test_url_inputs_are_checked_but_not_fetched_by_validation() -> None:
    item = Everything.model_validate({"image": "https://example.com/cat.png"})
    assert item.image is not None and item.image.is_remote
    assert item.image.mime_type == "image/png"
    assert item.model_dump(mode="json")["image"] == "https://example.com/cat.png"  # serialising fetches nothing


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://127.0.0.1:8000/cat.png", "127.0.0.1 is not a public address (127.0.0.0/8: Loopback, RFC 1122"),
        ("http://127.0.0.1:8000/cat.png", "; add 127.0.0.1:8000 to TUNGSTEN_URL_ALLOWLIST to allow it"),
        ("http://169.254.169.254/latest/meta-data/", "Link Local"),
        ("http://[fd00::5]/x.png", "fc00::/7: Unique-Local"),
        ("ftp://example.com/cat.png", "Unsupported URI scheme 'ftp'"),
        ("javascript:alert(1)", "Unsupported URI scheme 'javascript'"),
        ("file:///etc/passwd", "not accepted here"),
    ],
)
def test_urls_a_server_must_not_fetch_are_refused_up_front(value: str, message: str) -> None:
    error = _error({"image": value})
    assert error["type"] == "file_url" and message in error["msg"]


def test_the_allowlist_admits_internal_urls() -> None:
    item = Everything.model_validate({"image": "http://127.0.0.1:8000/cat.png"}, context={FILE_POLICY: LOOPBACK})
    assert item.image is not None and item.image.is_remote


def test_inline_files_over_the_size_limit() -> None:
    policy = FilePolicy(max_file_bytes=1000)
    error = _error({"binary": data_uri(b"x" * 1001, "application/octet-stream")}, file_policy=policy)
    assert error["type"] == "file_too_large" and "1001 bytes; the limit is 1000" in error["msg"]
    error = _error({"binary": base64.b64encode(b"x" * 1001).decode()}, file_policy=policy)
    assert error["type"] == "file_too_large"
    assert Everything.model_validate({"binary": data_uri(b"x" * 1000, "text/plain")}, context={FILE_POLICY: policy})


def test_data_uris_whose_bytes_contradict_their_type_are_refused() -> None:
    error = _error({"image": data_uri(jpeg(), "image/png")})
    assert error["type"] == "file_content" and "declares image/png but its bytes are image/jpeg" in error["msg"]
    assert _error({"audio": data_uri(b"hello", "audio/wav")})["type"] == "file_content"


def test_image_fields_take_only_images_within_the_pixel_limit() -> None:
    assert _error({"image": base64.b64encode(wav()).decode()})["type"] == "file_content"
    error = _error({"image": data_uri(png_bomb(), "image/png")})
    assert error["type"] == "image_too_large" and "pixels" in error["msg"]
    error = _error({"image": data_uri(png((50, 50)), "image/png")}, file_policy=FilePolicy(max_image_pixels=2000))
    assert "50x50 = 2500 pixels; the limit is 2000" in error["msg"]


def test_audio_and_video_round_trip_their_bytes() -> None:
    item = Everything.model_validate(
        {"audio": data_uri(wav(), "audio/wav"), "video": base64.b64encode(gif_video()).decode()}
    )
    assert item.audio is not None and item.audio.read_bytes() == wav() and item.audio.mime_type == "audio/wav"
    assert item.video is not None and item.video.read_bytes() == gif_video() and item.video.mime_type == "image/gif"
    dumped = item.model_dump(mode="json")
    assert dumped["audio"] == data_uri(wav(), "audio/wav")


def test_a_url_is_downloaded_into_the_materialisation_folder(tmp_path, file_server: FileServer) -> None:
    url = file_server.add("/cat.png", png(), headers={"Content-Type": "application/octet-stream"})
    item = Everything.model_validate({"image": url}, context={FILE_POLICY: LOOPBACK})
    assert item.image is not None
    with materialize_files_in(tmp_path, LOOPBACK):
        path = item.image.path
        assert path.parent == tmp_path and path.read_bytes() == png() and path.suffix == ".png"
        assert item.image.mime_type == "image/png"  # sniffed: the server's type said nothing
        assert item.model_dump(mode="json")["image"] == data_uri(png(), "image/png")  # what the model saw
    with pytest.raises(URLRefused):  # the default policy refuses loopback, even lazily
        Image.from_url(url).read_bytes()


def test_prepare_downloads_each_url_once_and_isolates_failures(
    tmp_path, file_server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = file_server.add("/good.png", png())
    bomb = file_server.add("/bomb.png", png_bomb())
    redirect = file_server.add("/to-metadata", status=302, headers={"Location": "http://169.254.169.254/latest/"})
    inputs = [
        Everything.model_validate(values, context={FILE_POLICY: LOOPBACK})
        for values in (
            {"image": good, "binary": good},
            {"image": file_server.url("/missing.png")},
            {"image": bomb},
            {"binary": redirect},
            {"masked": {"image": good, "mask": data_uri(png((3, 3)), "image/png")}},
        )
    ]
    with materialize_files_in(tmp_path, LOOPBACK):
        failures = prepare_inputs(inputs, LOOPBACK)
    assert sorted(failures) == [1, 2, 3, 4]
    # What stopped a download is not told (URLFetchFailed), only kept as its cause for the log.
    assert failures[1].field == "image" and str(failures[1].error) == "the URL could not be fetched"
    assert type(failures[1].error).__name__ == "URLFetchFailed" and "answered 404" in str(failures[1].error.cause)
    assert failures[2].field == "image" and type(failures[2].error).__name__ == "ImageTooLarge"
    assert failures[3].field == "binary" and str(failures[3].error) == "the URL could not be fetched"
    assert "Link Local" in str(failures[3].error.cause)
    # ... and logged, without the query string.
    assert f"URL input {file_server.url('/missing.png')} could not be fetched: FetchError: the server answered 404" in (
        caplog.text
    )
    assert (
        f"URL input {redirect} could not be fetched: URLRefused: 169.254.169.254 is not a public address" in caplog.text
    )
    assert failures[4].field == "masked.mask" and "the mask is 3x3 but the image is 8x6" in str(failures[4].error)
    assert file_server.requests.count("/good.png") == 1
    assert inputs[0].image.path.parent == tmp_path and inputs[0].binary.read_bytes() == png()


def test_masked_images_are_binarised_and_size_checked() -> None:
    mask = PILImage.new("L", (8, 6), 0)
    mask.putpixel((2, 2), 7)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    values = {"masked": {"image": data_uri(png(), "image/png"), "mask": data_uri(buffer.getvalue(), "image/png")}}
    masked = Everything.model_validate(values).masked
    assert masked is not None and masked.ready
    result = masked.mask.to_pil_image(mode=None)
    assert result.mode == "L" and result.getpixel((2, 2)) == 255 and result.getpixel((0, 0)) == 0
    deferred = Everything.model_validate(values, context={DEFER_DECODING: True}).masked
    assert deferred is not None and not deferred.ready and deferred.mask.read_bytes() == buffer.getvalue()
    values["masked"]["mask"] = data_uri(png((8, 5)), "image/png")
    for context in (None, {DEFER_DECODING: True}):
        with pytest.raises(ValidationError, match="the mask is 8x5 but the image is 8x6"):
            Everything.model_validate(values, context=context)
    with pytest.raises(ValidationError, match="mask"):
        Everything.model_validate({"masked": {"image": data_uri(png(), "image/png")}})


def test_output_files_as_links() -> None:
    output = Output(
        image=Image.from_bytes(png(), "image/png"),
        files=[Binary.from_bytes(b"abc"), Binary.from_url("https://x.test/y")],
    )
    sink = OutputFileSink("https://api.example.com/")
    dumped = output.model_dump(mode="json", context={OUTPUT_FILE_SINK: sink})
    assert [f.mime_type for f in sink.files] == ["image/png", "application/octet-stream"]
    assert [f.data for f in sink.files] == [png(), b"abc"]
    assert dumped["image"] == f"https://api.example.com/files/{sink.files[0].name}" and sink.files[0].name.endswith(
        ".png"
    )
    assert dumped["files"][1] == "https://x.test/y"  # a URL the model returned stays as it is
    assert len({f.name for f in sink.files}) == 2 and len(sink.files[1].name.split(".")[0]) == 32
