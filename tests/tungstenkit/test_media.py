"""Telling what bytes are, and decoding images within bounds."""

from __future__ import annotations

import io
import resource
import struct

import pytest
from PIL import Image as PILImage

from tests.filesupport import gif_video, jpeg, png, png_bomb, wav
from tungstenkit._errors import ImageTooLarge, InvalidFileContent
from tungstenkit._media import (
    binarize_mask,
    check_declared_type,
    decode_image,
    image_size,
    media_duration,
    sniff_mime_type,
)


@pytest.mark.parametrize(
    ("data", "mime_type"),
    [
        (png(), "image/png"),
        (jpeg(), "image/jpeg"),
        (gif_video(), "image/gif"),
        (wav(), "audio/wav"),
        (b"\x1a\x45\xdf\xa3\x01\x00", "video/webm"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00", "video/mp4"),
        (b"\x00\x00\x00\x18ftypM4A \x00\x00", "audio/mp4"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "image/heic"),
        (b"just text", None),
    ],
)
def test_sniffing(data: bytes, mime_type: str | None) -> None:
    assert sniff_mime_type(data) == mime_type


@pytest.mark.parametrize(
    ("declared", "data", "recorded"),
    [
        ("image/png", png(), "image/png"),
        ("image/jpg", jpeg(), "image/jpeg"),  # a common alias
        ("audio/webm", b"\x1a\x45\xdf\xa3\x01\x00", "audio/webm"),  # same container as video/webm
        ("application/octet-stream", wav(), "audio/wav"),  # says nothing: sniffed
        ("image/svg+xml", b"<svg/>", "image/svg+xml"),  # not a type we can recognise: trusted
    ],
)
def test_declared_types_that_fit_their_bytes(declared: str, data: bytes, recorded: str) -> None:
    assert check_declared_type(declared, data) == recorded


@pytest.mark.parametrize(
    ("declared", "data", "message"),
    [
        ("image/png", jpeg(), "declares image/png but its bytes are image/jpeg"),
        ("image/png", b"not an image at all", "declares image/png but its bytes are not image/png"),
        ("audio/wav", png(), "declares audio/wav but its bytes are image/png"),
        ("video/mp4", wav(), "declares video/mp4 but its bytes are audio/wav"),
    ],
)
def test_declared_types_contradicted_by_their_bytes(declared: str, data: bytes, message: str) -> None:
    with pytest.raises(InvalidFileContent, match=message):
        check_declared_type(declared, data)


def test_a_decompression_bomb_is_refused_from_its_header_without_memory_growth() -> None:
    bomb = png_bomb()  # 100000 x 100000: 10 gigapixels, 10 GB as 8-bit gray
    assert len(bomb) < 20_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for decode in (image_size, decode_image, binarize_mask):
        with pytest.raises(ImageTooLarge, match="pixels"):
            decode(bomb, 89_478_485)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024


def test_the_pixel_limit_is_ours_not_only_pillows() -> None:
    with pytest.raises(ImageTooLarge, match="20x20 = 400 pixels; the limit is 399"):
        image_size(png((20, 20)), 399)
    assert image_size(png((20, 20)), 400) == (20, 20)


def test_only_common_image_formats_are_decoded() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(buffer, "PPM")  # Pillow reads it, but inputs may not be PPM
    with pytest.raises(InvalidFileContent, match="not an image in a supported format"):
        image_size(buffer.getvalue(), 1000)
    with pytest.raises(InvalidFileContent):
        image_size(wav(), 1000)


def test_masks_are_binarised_to_mode_l() -> None:
    gray = PILImage.new("L", (4, 1))
    color = PILImage.new("RGB", (4, 1))
    for x, (value, rgb) in enumerate([(0, (0, 0, 0)), (1, (200, 0, 0)), (128, (0, 0, 30)), (255, (255, 255, 255))]):
        gray.putpixel((x, 0), value)
        color.putpixel((x, 0), rgb)
    for mask in (gray, color):
        buffer = io.BytesIO()
        mask.save(buffer, "PNG")
        data, size = binarize_mask(buffer.getvalue(), 1000)
        with PILImage.open(io.BytesIO(data)) as result:
            assert size == (4, 1) and result.mode == "L" and result.format == "PNG"
            assert [result.getpixel((x, 0)) for x in range(4)] == [0, 255, 255, 255]


def test_media_durations_come_from_headers() -> None:
    assert media_duration(wav(1.5)) == 1.5
    # FLAC: STREAMINFO with 44100 Hz and 88200 samples.
    packed = (44100 << 44) | (1 << 41) | (15 << 36) | 88200
    flac = b"fLaC" + b"\x00\x00\x00\x22" + bytes(10) + packed.to_bytes(8, "big") + bytes(16)
    assert media_duration(flac) == 2.0
    # MP4: ftyp, then moov holding mvhd (version 0: timescale 1000, duration 2500).
    mvhd_body = bytes(4) + bytes(8) + struct.pack(">II", 1000, 2500) + bytes(80)
    mvhd = struct.pack(">I4s", 8 + len(mvhd_body), b"mvhd") + mvhd_body
    moov = struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd
    mp4 = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0) + moov
    assert media_duration(mp4) == 2.5
    assert media_duration(b"OggS" + bytes(60)) is None
    assert media_duration(mp4[:20]) is None  # cut short: nothing to read
