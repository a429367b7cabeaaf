"""What a file's bytes are, and decoding images within bounds.

Pillow is imported only inside the functions that decode, so that ``import tungstenkit``
stays light.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from tungstenkit._errors import ImageTooLarge, InvalidFileContent

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: The largest image accepted unless an operator says otherwise: 40 megapixels covers
#: 8K video frames (33 MP) and the 24-36 MP of most cameras, and decodes to at most 120 MB
#: of RGB (480 MB as float32). Pillow's own default, 89 MP, let a 14 KB 1-bit PNG of
#: 9,400 x 9,400 pixels take a worker to 8 GB.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

#: The image formats decoded from untrusted bytes. Pillow reads many more (FITS, PSD,
#: PDF, ...), some with their own decompression bombs; inputs are limited to these.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF")

_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
)

_FTYP_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"avif": "image/avif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
}

#: Media types that share a container, so bytes sniffed as one may honestly be
#: declared as another (an audio-only WebM, an M4A in an MP4 box, ...).
_FAMILIES: tuple[frozenset[str], ...] = (
    frozenset({"video/mp4", "video/quicktime", "audio/mp4", "audio/x-m4a", "audio/m4a", "video/x-m4v", "video/3gpp"}),
    frozenset({"video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"}),
    frozenset({"audio/ogg", "video/ogg", "application/ogg", "audio/opus"}),
    frozenset({"image/heic", "image/heif", "image/avif"}),
)

_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
}

#: Declared types that say nothing about the bytes.
_UNSPECIFIC = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown", "text/plain"})


def sniff_mime_type(data: bytes) -> str | None:
    """The media type that a file's first bytes announce, if they are a known format."""
    if data[:4] == b"RIFF" and len(data) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(data[8:12])
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "video/mp4")
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    for offset, magic, mime in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return mime
    return None


def normalize_mime_type(mime_type: str) -> str:
    base = mime_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def _compatible(declared: str, sniffed: str) -> bool:
    if declared == sniffed:
        return True
    return any(declared in family and sniffed in family for family in _FAMILIES)


def _recognisable(mime_type: str) -> bool:
    """Whether ``sniff_mime_type`` would know bytes of this type when it saw them."""
    known = {mime for _, _, mime in _SIGNATURES} | set(_FTYP_BRANDS.values())
    known |= {"image/webp", "audio/wav", "video/x-msvideo", "video/mp4"}
    return mime_type in known or any(mime_type in family for family in _FAMILIES)


def check_declared_type(declared: str, data: bytes) -> str:
    """The media type to record for ``data`` declared as ``declared``.

    Raises ``InvalidFileContent`` when the bytes contradict a specific declaration:
    ``image/png`` holding a JPEG, or holding something that is no known format at all.
    """
    declared = normalize_mime_type(declared)
    sniffed = sniff_mime_type(data)
    if declared in _UNSPECIFIC:
        return sniffed or declared or "application/octet-stream"
    if sniffed is not None and not _compatible(declared, sniffed):
        raise InvalidFileContent(f"the data URI declares {declared} but its bytes are {sniffed}")
    if sniffed is None and _recognisable(declared):
        raise InvalidFileContent(f"the data URI declares {declared} but its bytes are not {declared}")
    return declared


def media_duration(data: bytes) -> float | None:
    """Seconds an audio or video file lasts, as its header declares it (WAV, FLAC, and
    the MP4 family: MP4, MOV, M4A); None for other formats or a header that says nothing."""
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return _wav_duration(data)
        if data[:4] == b"fLaC":
            return _flac_duration(data)
        if data[4:8] == b"ftyp":
            return _mp4_duration(data)
    except (struct.error, ZeroDivisionError):
        return None
    return None


def _wav_duration(data: bytes) -> float | None:
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        kind, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if kind == b"fmt ":
            byte_rate = struct.unpack_from("<I", data, offset + 16)[0]
        elif kind == b"data":
            return size / byte_rate if byte_rate else None
        offset += 8 + size + (size & 1)
    return None


def _flac_duration(data: bytes) -> float | None:
    # STREAMINFO, the first metadata block: 20 bits of sample rate, 36 of total samples.
    packed = int.from_bytes(data[18:26], "big")
    rate, samples = packed >> 44, packed & (2**36 - 1)
    return samples / rate if rate and samples else None


def _mp4_duration(data: bytes) -> float | None:
    moov = _mp4_box(data, 0, len(data), b"moov")
    if moov is None:
        return None
    mvhd = _mp4_box(data, *moov, b"mvhd")
    if mvhd is None:
        return None
    start = mvhd[0]
    if data[start] == 1:
        timescale, duration = struct.unpack_from(">IQ", data, start + 20)
    else:
        timescale, duration = struct.unpack_from(">II", data, start + 12)
    return duration / timescale if timescale else None


def _mp4_box(data: bytes, start: int, end: int, wanted: bytes) -> tuple[int, int] | None:
    """Where the body of the first ``wanted`` box between ``start`` and ``end`` lies."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = end - offset
        if size < header:
            return None
        if kind == wanted:
            return offset + header, min(offset + size, end)
        offset += size
    return None


def configure_pillow(max_pixels: int) -> None:
    """Make Pillow's own decompression-bomb guard match ``max_pixels`` in this process.

    Model code that opens images itself (``Image.open(file.path)``) is then guarded too.
    """
    from PIL import Image as PILImageModule

    PILImageModule.MAX_IMAGE_PIXELS = max_pixels


def open_image(source: bytes | Path, max_pixels: int) -> PILImage:
    """Open an image (header only, nothing decoded yet), refusing it past ``max_pixels``.

    Raises ``ImageTooLarge`` or ``InvalidFileContent``.
    """
    from PIL import Image as PILImageModule
    from PIL import UnidentifiedImageError

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    PILImageModule.init()
    formats = [name for name in IMAGE_FORMATS if name in PILImageModule.OPEN]
    try:
        image = PILImageModule.open(stream, formats=formats)
    except (PILImageModule.DecompressionBombError, PILImageModule.DecompressionBombWarning):
        raise ImageTooLarge(f"the image has more than {max_pixels} pixels, the limit") from None
    except UnidentifiedImageError:
        names = ", ".join(IMAGE_FORMATS)
        raise InvalidFileContent(f"the bytes are not an image in a supported format ({names})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidFileContent(f"the image cannot be read: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return image


def image_size(source: bytes | Path, max_pixels: int) -> tuple[int, int]:
    """An image's width and height from its header, within the pixel limit."""
    image = open_image(source, max_pixels)
    try:
        return image.size
    finally:
        image.close()


def decode_image(source: bytes | Path, max_pixels: int, mode: str | None = None) -> PILImage:
    """An image fully decoded (and converted to ``mode``), within the pixel limit."""
    from PIL import Image as PILImageModule

    image = open_image(source, max_pixels)
    try:
        image.load()
    except (PILImageModule.DecompressionBombError, PILImageModule.DecompressionBombWarning):
        raise ImageTooLarge(f"the image has more than {max_pixels} pixels, the limit") from None
    except (OSError, ValueError, SyntaxError) as exc:
        image.close()
        raise InvalidFileContent(f"the image cannot be decoded: {exc}") from None
    if mode and image.mode != mode:
        converted = image.convert(mode)
        image.close()
        return converted
    return image


def binarize_mask(source: bytes | Path, max_pixels: int) -> tuple[bytes, tuple[int, int]]:
    """A mask as a PNG in mode ``L`` whose pixels are 0 or 255 (any non-zero becomes 255)."""
    mask = decode_image(source, max_pixels, mode="L")
    try:
        binary = mask.point(lambda value: 255 if value > 0 else 0)
        buffer = io.BytesIO()
        binary.save(buffer, format="PNG")
        return buffer.getvalue(), mask.size
    finally:
        mask.close()
