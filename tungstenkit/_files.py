"""File types for model inputs and outputs: ``Image``, ``Video``, ``Audio``, ``Binary``.

A file travels through JSON as a URI string. Inputs from HTTP clients may be data
URIs or plain base64; local paths and ``file://`` URIs are accepted only where the
caller allows local files (``tungsten predict`` and plain Python), never from HTTP
or from Redis. Outputs are written as data URIs.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import contextvars
import io
import mimetypes
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote_to_bytes, urlparse
from urllib.request import url2pathname

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from typing_extensions import Self

#: Validation context key: when true, local paths and ``file://`` URIs are accepted.
ALLOW_LOCAL_FILES = "allow_local_files"

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
    (4, b"ftyp", "video/mp4"),
)


def sniff_mime_type(data: bytes) -> str | None:
    """The media type that a file's first bytes announce, if they are a known format."""
    if data[:4] == b"RIFF" and len(data) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(data[8:12])
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    for offset, magic, mime in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return mime
    return None


def encode_data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """Split a ``data:`` URI into its media type and bytes; ValueError if malformed."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("a data URI needs a comma between its header and its data")
    params = header.split(";")
    mime_type = params[0] or "text/plain"
    if params[-1] == "base64":
        try:
            return mime_type, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"the data URI's base64 payload is invalid ({exc})") from None
    return mime_type, unquote_to_bytes(payload)


# Where ``File.path`` writes the bytes of data URIs. The worker points this at a
# per-batch folder that it removes afterwards; plain Python use gets one folder
# per process, removed at exit.
_materialize_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("tungsten_materialize_dir", default=None)
_process_dir: Path | None = None


@contextlib.contextmanager
def materialize_files_in(folder: Path) -> Iterator[Path]:
    """Within the block, ``File.path`` writes files under ``folder``."""
    token = _materialize_dir.set(folder)
    try:
        yield folder
    finally:
        _materialize_dir.reset(token)


def _current_materialize_dir() -> Path:
    global _process_dir
    folder = _materialize_dir.get()
    if folder is not None:
        return folder
    if _process_dir is None:
        _process_dir = Path(tempfile.mkdtemp(prefix="tungsten-files-"))
        atexit.register(shutil.rmtree, _process_dir, True)
    return _process_dir


class File:
    """A file given to or returned by a model, carried as a URI string."""

    #: What the JSON schema calls this type (``x-tungsten-file``).
    kind: ClassVar[str] = "binary"
    #: The media type assumed for bytes that announce none.
    default_mime_type: ClassVar[str] = "application/octet-stream"

    __slots__ = ("_uri", "_local_path")

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._local_path: Path | None = None

    # -- constructors -------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path) -> Self:
        """A file that refers to a local path (read when the output is serialised)."""
        return cls(Path(path).resolve().as_uri())

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str | None = None) -> Self:
        """A file holding ``data``, as a data URI."""
        return cls(encode_data_uri(data, mime_type or sniff_mime_type(data) or cls.default_mime_type))

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(url)

    # -- access -------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def mime_type(self) -> str:
        if self._uri.startswith("data:"):
            return decode_data_uri(self._uri)[0]
        guessed, _ = mimetypes.guess_type(self._uri)
        return guessed or self.default_mime_type

    def read_bytes(self) -> bytes:
        scheme = self._uri.split(":", 1)[0].lower()
        if scheme == "data":
            return decode_data_uri(self._uri)[1]
        if scheme == "file":
            return _file_uri_to_path(self._uri).read_bytes()
        raise ValueError(f"Cannot read {scheme!r} URIs: {self._uri[:80]}")

    @property
    def path(self) -> Path:
        """A local path holding the file's bytes (written on first access)."""
        if self._local_path is None:
            if self._uri.startswith("file:"):
                self._local_path = _file_uri_to_path(self._uri)
            else:
                mime_type, data = decode_data_uri(self._uri) if self._uri.startswith("data:") else ("", self.read_bytes())
                suffix = mimetypes.guess_extension(mime_type) or ""
                target = _current_materialize_dir() / f"{uuid.uuid4().hex}{suffix}"
                target.write_bytes(data)
                self._local_path = target
        return self._local_path

    def to_data_uri(self) -> str:
        if self._uri.startswith("data:"):
            return self._uri
        data = self.read_bytes()
        return encode_data_uri(data, sniff_mime_type(data) or self.mime_type)

    # -- pydantic integration -------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_file, when_used="json-unless-none"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"type": "string", "format": "uri", "x-tungsten-file": cls.kind}

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> File:
        if isinstance(value, File):
            return value if type(value) is cls else cls(value.uri)
        if not isinstance(value, str):
            raise PydanticCustomError("file_type", "A file must be given as a string (a data URI or base64)")
        allow_local = bool(info.context and info.context.get(ALLOW_LOCAL_FILES))
        return cls(_normalize_uri(value, cls.default_mime_type, allow_local))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __repr__(self) -> str:
        shown = self._uri if len(self._uri) <= 60 else self._uri[:57] + "..."
        return f"{type(self).__name__}({shown!r})"

    def __str__(self) -> str:
        return self._uri


def _serialize_file(value: File) -> str:
    return value.to_data_uri()


def _file_uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError("Remote file:// URIs are not supported")
    return Path(url2pathname(parsed.path))


def _normalize_uri(value: str, default_mime_type: str, allow_local: bool) -> str:
    """Check a file input string and return it as a URI the worker can read."""
    scheme = value.split(":", 1)[0].lower() if ":" in value[:16] else ""
    if scheme == "data":
        try:
            decode_data_uri(value)
        except ValueError as exc:
            raise PydanticCustomError("file_data_uri", "Invalid data URI: {reason}", {"reason": str(exc)}) from None
        return value
    if scheme in ("http", "https"):
        raise PydanticCustomError("file_url", "URL inputs are not supported yet; send the file as a data URI or base64")
    if scheme == "file" or (allow_local and _looks_like_path(value)):
        if not allow_local:
            raise PydanticCustomError("file_local", "Local file paths are not accepted here; send the file as a data URI or base64")
        path = _file_uri_to_path(value) if scheme == "file" else Path(value).expanduser()
        if not path.is_file():
            raise PydanticCustomError("file_missing", "File not found: {path}", {"path": str(path)})
        return path.resolve().as_uri()
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError(
            "file_encoding", "Invalid file input: expected a data URI or a base64-encoded string"
        ) from None
    return encode_data_uri(data, sniff_mime_type(data) or default_mime_type)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or Path(value).expanduser().exists()


class Binary(File):
    """Any file."""

    kind = "binary"


class Image(File):
    """An image file (PNG, JPEG, ...)."""

    kind = "image"
    default_mime_type = "image/png"

    @classmethod
    def from_pil_image(cls, image: PILImage, format: str | None = None) -> Self:  # noqa: A002 - Pillow's name
        """An image holding ``image`` encoded as ``format`` (its own format, else PNG)."""
        fmt = (format or image.format or "PNG").upper()
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return cls.from_bytes(buffer.getvalue(), f"image/{fmt.lower()}")

    def to_pil_image(self, mode: str | None = "RGB") -> PILImage:
        """The image decoded by Pillow, converted to ``mode`` unless it is None."""
        from PIL import Image as PILImageModule

        image = PILImageModule.open(io.BytesIO(self.read_bytes()))
        image.load()
        return image.convert(mode) if mode else image


class Audio(File):
    """An audio file (WAV, MP3, ...)."""

    kind = "audio"
    default_mime_type = "audio/wav"


class Video(File):
    """A video file (MP4, WebM, ...)."""

    kind = "video"
    default_mime_type = "video/mp4"
