from __future__ import annotations

import base64
import io

import pytest
from PIL import Image as PILImage
from pydantic import ValidationError

from tungstenkit import BaseIO, Binary, Image
from tungstenkit._files import ALLOW_LOCAL_FILES, materialize_files_in, sniff_mime_type


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


def test_local_paths_are_refused_unless_allowed(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "cat.png"
    path.write_bytes(_png_bytes())
    for value in (str(path), path.as_uri(), "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(ValidationError, match="not accepted|Invalid file input"):
            Input.model_validate({"image": value})
    allowed = Input.model_validate({"image": str(path)}, context={ALLOW_LOCAL_FILES: True}).image
    assert allowed.path == path
    with pytest.raises(ValidationError, match="File not found"):
        Input.model_validate({"image": str(tmp_path / "missing.png")}, context={ALLOW_LOCAL_FILES: True})


def test_outputs_serialize_as_data_uris(tmp_path) -> None:  # noqa: ANN001
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


def test_path_materializes_in_the_given_folder(tmp_path) -> None:  # noqa: ANN001
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
