"""File types for model inputs and outputs: ``Image``, ``Video``, ``Audio``, ``Binary``.

A file travels through JSON as a URI string. Inputs from HTTP clients may be data
URIs, plain base64 or http(s) URLs; local paths and ``file://`` URIs are accepted only
where the caller allows local files (``tungsten predict`` and plain Python), never from
HTTP or from Redis. Outputs are written as data URIs, or as links to the API when the
worker serialises them with an output-file sink.

Validation checks what it can without the network: sizes, that a data URI's bytes are
what it declares, image dimensions (from the header, nothing decoded), and that a URL
is http(s) and not a literal private address. URL inputs are downloaded later, in the
worker, by ``tungstenkit._prepare``.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import contextvars
import dataclasses
import io
import mimetypes
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote_to_bytes, urlparse
from urllib.request import url2pathname

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, SerializationInfo, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema

from tungstenkit._errors import (
    FileInputError,
    FileTooLarge,
    ImageTooLarge,
    InvalidFileContent,
    MediaTooLong,
    URLRefused,
)
from tungstenkit._fetch import SCHEMES, Allowlist, Download, FetchPolicy, fetch, parse_url
from tungstenkit._media import (
    DEFAULT_MAX_IMAGE_PIXELS,
    check_declared_type,
    decode_image,
    image_size,
    media_duration,
    normalize_mime_type,
    sniff_mime_type,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from typing_extensions import Self

    from tungstenkit._settings import Settings

#: Validation context key: when true, local paths and ``file://`` URIs are accepted.
ALLOW_LOCAL_FILES = "allow_local_files"
#: Validation context key: the ``FilePolicy`` (limits, URL allow-list) to apply.
FILE_POLICY = "file_policy"
#: Validation context key: when true, files are checked but not transformed (the API
#: leaves binarising masks to the worker, which validates the same input again).
DEFER_DECODING = "defer_decoding"
#: Serialisation context key: a callable taking a ``File`` and returning the string to
#: put in the JSON instead of a data URI (the worker's store for ``output_files=url``).
OUTPUT_FILE_SINK = "output_file_sink"

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024

__all__ = [
    "ALLOW_LOCAL_FILES",
    "DEFER_DECODING",
    "FILE_POLICY",
    "OUTPUT_FILE_SINK",
    "Audio",
    "Binary",
    "File",
    "FileLimits",
    "FilePolicy",
    "Image",
    "Video",
    "decode_data_uri",
    "encode_data_uri",
    "materialize_files_in",
    "sniff_mime_type",
]


@dataclass(frozen=True)
class FilePolicy:
    """The limits applied to file inputs, built from ``Settings`` at an entry point."""

    #: Largest file, decoded (413 from the API above it, a failed prediction for a download).
    max_file_bytes: int = _DEFAULT_MAX_FILE_BYTES
    #: Largest image, in pixels (width x height).
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    fetch: FetchPolicy = field(default_factory=FetchPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> FilePolicy:
        return cls(
            max_file_bytes=settings.max_file_bytes,
            max_image_pixels=settings.max_image_pixels,
            fetch=FetchPolicy(
                allowlist=Allowlist.parse(settings.url_allowlist),
                max_bytes=settings.max_file_bytes,
                connect_timeout_s=settings.url_connect_timeout_s,
                read_timeout_s=settings.url_read_timeout_s,
                total_timeout_s=settings.url_timeout_s,
                max_redirects=settings.url_max_redirects,
            ),
        )


@dataclass(frozen=True)
class FileLimits:
    """Bounds that one field puts on its files, within the server's own limits.

    Declared with ``Field(..., max_bytes=..., max_pixels=..., max_duration_s=...)`` (or
    ``Option``), which add one to the field's metadata. Checked when a request is
    validated, and for URL inputs once downloaded, before the model sees them. A list of
    files is held to them file by file; ``MaskedImage`` fields are not.
    """

    #: Largest file, in bytes (413 over it, as for the server's limit).
    max_bytes: int | None = None
    #: Largest image, in pixels (``Image`` fields; read from the header, nothing decoded).
    max_pixels: int | None = None
    #: Longest audio or video, in seconds, as its header declares it (WAV, FLAC, and the
    #: MP4 family); a file whose duration cannot be read so is refused.
    max_duration_s: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.max_bytes, self.max_pixels, self.max_duration_s))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._apply, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        limits = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        json_schema["x-tungsten-limits"] = limits
        return json_schema

    def _apply(self, value: Any) -> Any:
        for file in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(file, File):
                try:
                    file.bound(self)
                except FileInputError as exc:
                    raise file_error(exc) from None
        return value

    def check(self, file: File, data: bytes | Path) -> None:
        """Raise ``FileTooLarge``, ``ImageTooLarge`` or ``MediaTooLong`` if ``file`` is past a bound."""
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if self.max_bytes is not None and size > self.max_bytes:
            raise FileTooLarge(f"the file is {size} bytes; this field takes at most {self.max_bytes}")
        if self.max_pixels is not None and isinstance(file, Image):
            width, height = file.size_within(current_policy())
            if width * height > self.max_pixels:
                raise ImageTooLarge(
                    f"the image is {width}x{height} = {width * height} pixels; this field takes at most {self.max_pixels}"
                )
        if self.max_duration_s is not None:
            seconds = media_duration(data.read_bytes() if isinstance(data, Path) else data)
            if seconds is None:
                raise InvalidFileContent(
                    "the file's duration cannot be read from its header (WAV, FLAC, MP4, MOV or M4A), "
                    f"and this field takes at most {self.max_duration_s:g} s"
                )
            if seconds > self.max_duration_s:
                raise MediaTooLong(
                    f"the file lasts {seconds:.1f} s; this field takes at most {self.max_duration_s:g} s"
                )


def encode_data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _data_uri_header(uri: str) -> tuple[str, bool]:
    header = uri[5:].split(",", 1)[0]
    params = header.split(";")
    return params[0] or "text/plain", params[-1].strip().lower() == "base64"


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """Split a ``data:`` URI into its media type and bytes; ValueError if malformed."""
    _, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("a data URI needs a comma between its header and its data")
    mime_type, is_base64 = _data_uri_header(uri)
    if is_base64:
        try:
            return mime_type, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"the data URI's base64 payload is invalid ({exc})") from None
    return mime_type, unquote_to_bytes(payload)


# Where ``File.path`` writes the bytes of data URIs and downloads. The worker points
# this at a per-batch folder that it removes afterwards; plain Python use gets one
# folder per process, removed at exit. The policy is the one lazy downloads follow.
_materialize_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("tungsten_materialize_dir", default=None)
_policy: contextvars.ContextVar[FilePolicy | None] = contextvars.ContextVar("tungsten_file_policy", default=None)
# The files that wrote a copy into the folder, which they forget when it goes.
_written: contextvars.ContextVar[list[File] | None] = contextvars.ContextVar("tungsten_written_files", default=None)
_process_dir: Path | None = None
_DEFAULT_POLICY = FilePolicy()


@contextlib.contextmanager
def materialize_files_in(folder: Path, policy: FilePolicy | None = None, *, transient: bool = False) -> Iterator[Path]:
    """Within the block, ``File.path`` and downloads write files under ``folder``.

    The folder is created on first use, so a batch that writes no file costs nothing.
    With ``transient``, the caller removes the folder after the block, so the files that
    wrote a copy there forget it when the block ends: a batch run again (in halves, after
    a failure) writes them anew.
    """
    token = _materialize_dir.set(folder)
    written_token = _written.set([] if transient else None)
    policy_token = _policy.set(policy) if policy is not None else None
    try:
        yield folder
    finally:
        if policy_token is not None:
            _policy.reset(policy_token)
        for file in _written.get() or ():
            file._local_path = None
        _written.reset(written_token)
        _materialize_dir.reset(token)


def current_policy() -> FilePolicy:
    return _policy.get() or _DEFAULT_POLICY


def _current_materialize_dir() -> Path:
    global _process_dir
    folder = _materialize_dir.get()
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder
    if _process_dir is None:
        _process_dir = Path(tempfile.mkdtemp(prefix="tungsten-files-"))
        atexit.register(shutil.rmtree, _process_dir, True)
    return _process_dir


def _scheme(value: str) -> str:
    match = _SCHEME.match(value)
    return match.group(1).lower() if match else ""


class File:
    """A file given to or returned by a model, carried as a URI string."""

    #: What the JSON schema calls this type (``x-tungsten-file``).
    kind: ClassVar[str] = "binary"
    #: The media type assumed for bytes that announce none.
    default_mime_type: ClassVar[str] = "application/octet-stream"

    __slots__ = ("_limits", "_local_path", "_mime_type", "_uri")

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._local_path: Path | None = None
        self._mime_type: str | None = None
        self._limits: FileLimits | None = None

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
        """A file at an http(s) URL, downloaded (with the server's URL guard) when first read."""
        return cls(url)

    # -- access -------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def is_remote(self) -> bool:
        """Whether this is a URL that has not been downloaded yet."""
        return self._local_path is None and _scheme(self._uri) in SCHEMES

    @property
    def mime_type(self) -> str:
        if self._mime_type is not None:
            return self._mime_type
        if self._uri.startswith("data:"):
            return normalize_mime_type(_data_uri_header(self._uri)[0])
        guessed, _ = mimetypes.guess_type(urlparse(self._uri).path)
        return guessed or self.default_mime_type

    def read_bytes(self) -> bytes:
        """The file's bytes (a URL is downloaded first, into the batch's folder)."""
        if self._local_path is not None:
            return self._local_path.read_bytes()
        scheme = _scheme(self._uri)
        if scheme == "data":
            return decode_data_uri(self._uri)[1]
        if scheme == "file":
            return _file_uri_to_path(self._uri).read_bytes()
        if scheme in SCHEMES:
            return self._download().read_bytes()
        raise ValueError(f"Cannot read {scheme!r} URIs: {self._uri[:80]}")

    @property
    def path(self) -> Path:
        """A local path holding the file's bytes (written on first access, in a temporary folder)."""
        if self._local_path is None:
            scheme = _scheme(self._uri)
            if scheme == "file":
                self._local_path = _file_uri_to_path(self._uri)
            elif scheme in SCHEMES:
                self._download()
            else:
                mime_type, data = decode_data_uri(self._uri)
                self._local_path = self._write(data, mime_type)
        assert self._local_path is not None
        return self._local_path

    def save(self, path: str | Path) -> Path:
        """Write the file's bytes to ``path`` and return where they went.

        ``path`` may be an existing folder: the file then gets a new name in it, with the
        extension of its media type (``out/3f2a...png``).
        """
        target = Path(path).expanduser()
        data = self.read_bytes()
        if target.is_dir():
            suffix = mimetypes.guess_extension(normalize_mime_type(self.content_type(data))) or ""
            target = target / f"{uuid.uuid4().hex[:12]}{suffix}"
        target.write_bytes(data)
        return target

    def to_data_uri(self) -> str:
        if self._uri.startswith("data:"):
            return self._uri
        data = self.read_bytes()
        return encode_data_uri(data, self.content_type(data))

    def content_type(self, data: bytes) -> str:
        """The media type to announce for this file's ``data``."""
        if self._uri.startswith("data:") or self._mime_type is not None:
            return self.mime_type
        return sniff_mime_type(data) or self.mime_type

    # -- downloads ------------------------------------------------------------------
    def attach_download(self, download: Download, policy: FilePolicy) -> None:
        """Keep a finished download of this file's URL: checked, then written to the batch's folder."""
        declared = normalize_mime_type(download.content_type)
        mime_type = sniff_mime_type(download.data) or (
            declared if declared not in ("", "application/octet-stream", "binary/octet-stream") else self.mime_type
        )
        self._check_content(download.data, policy)
        if self._limits:
            self._limits.check(self, download.data)
        self._local_path = self._write(download.data, mime_type)
        self._mime_type = mime_type

    def bound(self, limits: FileLimits) -> None:
        """Hold this file to its field's ``limits``: now, or once downloaded if it is a URL."""
        self._limits = limits
        if limits and not self.is_remote:
            source = self._local_path or (_file_uri_to_path(self._uri) if self._uri.startswith("file:") else None)
            limits.check(self, source or self.read_bytes())

    def _download(self) -> Path:
        policy = current_policy()
        self.attach_download(fetch(self._uri, policy.fetch), policy)
        assert self._local_path is not None
        return self._local_path

    def _write(self, data: bytes, mime_type: str) -> Path:
        suffix = mimetypes.guess_extension(normalize_mime_type(mime_type)) or ""
        target = _current_materialize_dir() / f"{uuid.uuid4().hex}{suffix}"
        target.write_bytes(data)
        written = _written.get()
        if written is not None:
            written.append(self)
        return target

    # -- validation -------------------------------------------------------------------
    def _check_content(self, source: bytes | Path, policy: FilePolicy) -> None:
        """Refuse bytes this kind of file cannot be (overridden by ``Image``)."""

    @classmethod
    def _checked(cls, uri: str, data: bytes, mime_type: str, policy: FilePolicy) -> Self:
        if len(data) > policy.max_file_bytes:
            raise FileTooLarge(
                f"the file is {len(data)} bytes; the limit is {policy.max_file_bytes} (TUNGSTEN_MAX_FILE_BYTES)"
            )
        file = cls(uri)
        file._mime_type = mime_type
        file._check_content(data, policy)
        return file

    @classmethod
    def _local(cls, path: Path, policy: FilePolicy) -> Self:
        if not path.is_file():
            raise FileInputError(f"File not found: {path}")
        size = path.stat().st_size
        if size > policy.max_file_bytes:
            raise FileTooLarge(
                f"{path} is {size} bytes; the limit is {policy.max_file_bytes} (TUNGSTEN_MAX_FILE_BYTES)"
            )
        file = cls(path.resolve().as_uri())
        file._check_content(path, policy)
        return file

    @classmethod
    def parse(cls, value: str, policy: FilePolicy | None = None, allow_local: bool = False) -> Self:
        """Check a file input string and return the file it names; ``FileInputError`` if unfit."""
        policy = policy or _DEFAULT_POLICY
        scheme = _scheme(value)
        if scheme == "data":
            value = "data:" + value[5:]
            try:
                declared, data = decode_data_uri(value)
            except ValueError as exc:
                raise InvalidFileContent(f"Invalid data URI: {exc}") from None
            return cls._checked(value, data, check_declared_type(declared, data), policy)
        if scheme in SCHEMES:
            parse_url(value, policy.fetch.allowlist)
            return cls(value)
        if scheme == "file":
            if not allow_local:
                raise URLRefused(
                    "Local file paths are not accepted here; send the file as a data URI, base64 or an http(s) URL"
                )
            return cls._local(_file_uri_to_path(value), policy)
        if scheme and not (allow_local and len(scheme) == 1):  # "C:\..." is a Windows path
            raise URLRefused(f"Unsupported URI scheme {scheme!r}: send a data URI, base64, or an http(s) URL")
        if allow_local:
            path = Path(value).expanduser()
            if path.is_file():
                return cls._local(path, policy)
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            if allow_local and _looks_like_path(value):
                raise FileInputError(f"File not found: {Path(value).expanduser()}") from None
            raise InvalidFileContent(
                "Invalid file input: expected a data URI, a base64-encoded string or an http(s) URL"
            ) from None
        mime_type = sniff_mime_type(data) or cls.default_mime_type
        return cls._checked(encode_data_uri(data, mime_type), data, mime_type, policy)

    # -- pydantic integration -------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_file, info_arg=True, when_used="json-unless-none"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "format": "uri", "x-tungsten-file": cls.kind}

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> File:
        if isinstance(value, File):
            return value if type(value) is cls else cls._convert(value)
        if not isinstance(value, str):
            raise PydanticCustomError("file_type", "A file must be given as a string (a data URI, base64 or a URL)")
        context = info.context or {}
        try:
            return cls.parse(value, context.get(FILE_POLICY), bool(context.get(ALLOW_LOCAL_FILES)))
        except FileInputError as exc:
            raise file_error(exc) from None

    @classmethod
    def _convert(cls, other: File) -> Self:
        file = cls(other._uri)
        file._local_path = other._local_path
        file._mime_type = other._mime_type
        file._limits = other._limits
        return file

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __repr__(self) -> str:
        shown = self._uri if len(self._uri) <= 60 else self._uri[:57] + "..."
        return f"{type(self).__name__}({shown!r})"

    def __str__(self) -> str:
        return self._uri


def file_error(exc: FileInputError) -> PydanticCustomError:
    """A validation error for a refused file, whose ``type`` tells the API which status to answer."""
    kinds: tuple[tuple[type[FileInputError], str], ...] = (
        (FileTooLarge, "file_too_large"),
        (ImageTooLarge, "image_too_large"),
        (MediaTooLong, "media_too_long"),
        (URLRefused, "file_url"),
        (InvalidFileContent, "file_content"),
    )
    kind = next((name for error_type, name in kinds if isinstance(exc, error_type)), "file_input")
    return PydanticCustomError(kind, "{reason}", {"reason": str(exc)})


def _serialize_file(value: File, info: SerializationInfo) -> str:
    sink: Callable[[File], str] | None = (info.context or {}).get(OUTPUT_FILE_SINK)
    if sink is not None:
        return sink(value)
    if value.is_remote:
        # A URL nobody downloaded stays a URL: serialising never makes a request.
        return value.uri
    return value.to_data_uri()


def _file_uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise URLRefused("Remote file:// URIs are not supported")
    return Path(url2pathname(parsed.path))


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith("~")


class Binary(File):
    """Any file."""

    kind = "binary"


class Image(File):
    """An image file (PNG, JPEG, GIF, WebP, BMP or TIFF)."""

    kind = "image"
    default_mime_type = "image/png"

    __slots__ = ("_size",)

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._size: tuple[int, int] | None = None

    @classmethod
    def from_pil_image(cls, image: PILImage, format: str | None = None) -> Self:  # Pillow's name
        """An image holding ``image`` encoded as ``format`` (its own format, else PNG)."""
        fmt = (format or image.format or "PNG").upper()
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return cls.from_bytes(buffer.getvalue(), f"image/{fmt.lower()}")

    def to_pil_image(self, mode: str | None = "RGB") -> PILImage:
        """The image decoded by Pillow, converted to ``mode`` unless it is None.

        Images over the server's pixel limit raise ``ImageTooLarge`` instead of filling memory.
        """
        return decode_image(self.read_bytes(), current_policy().max_image_pixels, mode)

    def size_within(self, policy: FilePolicy) -> tuple[int, int]:
        """Width and height, read from the header (``ImageTooLarge`` past the pixel limit)."""
        if self._size is None:
            source = self._local_path or (_file_uri_to_path(self._uri) if self._uri.startswith("file:") else None)
            self._size = image_size(source or self.read_bytes(), policy.max_image_pixels)
        return self._size

    def _check_content(self, source: bytes | Path, policy: FilePolicy) -> None:
        self._size = image_size(source, policy.max_image_pixels)

    @classmethod
    def _convert(cls, other: File) -> Self:
        file = super()._convert(other)
        file._size = other._size if isinstance(other, Image) else None
        return file


class Audio(File):
    """An audio file (WAV, MP3, FLAC, Ogg, ...)."""

    kind = "audio"
    default_mime_type = "audio/wav"


class Video(File):
    """A video file (MP4, WebM, ...)."""

    kind = "video"
    default_mime_type = "video/mp4"
