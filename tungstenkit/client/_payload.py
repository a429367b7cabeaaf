"""Inputs into JSON, and outputs out of it, guided by the model's JSON schemas.

Inputs may hold ``pathlib.Path``s, ``bytes``, PIL images and ``tungstenkit`` files:
each is sent as a data URI (a file that is an http(s) URL stays one, for the server to
fetch). Outputs are walked along the model's output schema: every field the schema marks
as a file (``x-tungsten-file``) becomes an ``Image``, ``Audio``, ``Video`` or ``Binary``.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

from tungstenkit._files import Audio, Binary, File, Image, Video, encode_data_uri
from tungstenkit._media import normalize_mime_type, sniff_mime_type
from tungstenkit.client._errors import ClientError

FILE_CLASSES: dict[str, type[File]] = {"image": Image, "audio": Audio, "video": Video, "binary": Binary}

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


# -- inputs ------------------------------------------------------------------------
def encode_inputs(inputs: Any) -> list[Any]:
    """A list of JSON-ready input objects, from one input or a list of them."""
    items = [inputs] if isinstance(inputs, Mapping) or _is_model(inputs) else list(inputs)
    if not items:
        raise ClientError("predict() needs at least one input")
    return [encode_value(item) for item in items]


def encode_value(value: Any) -> Any:
    """``value`` with every file-like thing in it turned into a data URI (or its URL)."""
    if _is_model(value):
        return encode_value(value.model_dump(mode="python"))
    if isinstance(value, File):
        return value.uri if value.is_remote else value.to_data_uri()
    if isinstance(value, PurePath):
        return _path_to_data_uri(Path(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return encode_data_uri(data, sniff_mime_type(data) or "application/octet-stream")
    if _is_pil_image(value):
        return Image.from_pil_image(value).uri
    if isinstance(value, Mapping):
        return {str(key): encode_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(item) for item in value]
    return value


def _path_to_data_uri(path: Path) -> str:
    path = path.expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClientError(f"Input file not found: {path}") from None
    except OSError as exc:
        raise ClientError(f"Cannot read input file {path}: {exc.strerror or exc}") from None
    guessed, _ = mimetypes.guess_type(path.name)
    return encode_data_uri(data, sniff_mime_type(data) or guessed or "application/octet-stream")


def _is_model(value: Any) -> bool:
    return hasattr(value, "model_dump") and hasattr(type(value), "model_fields")


def _is_pil_image(value: Any) -> bool:
    # Checked by module name so that PIL is never imported for inputs that hold no image.
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save") and hasattr(value, "mode")


_REMOTE_PREFIXES = ("data:", "http://", "https://")
#: Longer strings in a file field are taken for plain base64, not for paths.
_MAX_PATH_LENGTH = 1024
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def local_file(value: str, base: Path) -> Path | None:
    """The local file a file field's string names (relative to ``base``), or None when the
    string is for the server (a data URI, a URL, plain base64). A string that reads as a
    path to nothing is a ``ClientError``."""
    if value.startswith(_REMOTE_PREFIXES):
        return None
    if len(value) <= _MAX_PATH_LENGTH:
        path = base / Path(value).expanduser()
        if path.is_file():
            return path
        if not _BASE64.fullmatch(value):
            raise ClientError(f"File not found: {path}")
    return None


def with_local_files(walker: SchemaWalker, value: Any, base: Path) -> Any:
    """``value`` with the local file names in its file fields turned into ``Path``s (to send as data URIs)."""

    def resolve(kind: str, item: Any, path: tuple[str | int, ...]) -> Any:
        found = local_file(item, base) if isinstance(item, str) else None
        return item if found is None else found

    return walker.map_files(value, resolve)


# -- walking a value along its schema -------------------------------------------------
class SchemaWalker:
    """Finds the file fields of values that follow one JSON schema (with its ``$defs``)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._root = schema
        self._defs: Mapping[str, Any] = schema.get("$defs", {}) or {}

    def map_files(self, value: Any, visit: Callable[[str, Any, tuple[str | int, ...]], Any]) -> Any:
        """``value`` with ``visit(kind, item, path)`` applied to the item of each file field."""
        return self._walk(self._root, value, (), visit, 0)

    def file_fields(self) -> dict[str, str]:
        """The top-level fields that hold a file (possibly optional), by name: their kind."""
        found = {}
        for name, schema in (self._resolve(self._root).get("properties") or {}).items():
            kind = self._file_kind(schema)
            if kind:
                found[name] = kind
        return found

    def _file_kind(self, schema: Mapping[str, Any]) -> str | None:
        schema = self._resolve(schema)
        if "x-tungsten-file" in schema:
            return str(schema["x-tungsten-file"])
        for branch in schema.get("anyOf") or schema.get("oneOf") or ():
            kind = self._file_kind(branch)
            if kind:
                return kind
        return None

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        for _ in range(32):
            ref = schema.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                schema = self._defs.get(ref.rsplit("/", 1)[1], {})
            elif isinstance(ref, str) and ref == "#":
                schema = self._root
            elif len(schema.get("allOf") or ()) == 1:
                schema = schema["allOf"][0]
            else:
                break
        return schema

    def _walk(
        self,
        schema: Mapping[str, Any],
        value: Any,
        path: tuple[str | int, ...],
        visit: Callable[[str, Any, tuple[str | int, ...]], Any],
        depth: int,
    ) -> Any:
        if depth > 64 or value is None:
            return value
        schema = self._resolve(schema)
        kind = schema.get("x-tungsten-file")
        if kind is not None and isinstance(value, str):
            return visit(str(kind), value, path)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            branch = next((b for b in branches if _fits(self._resolve(b), value)), None)
            return value if branch is None else self._walk(branch, value, path, visit, depth + 1)
        if isinstance(value, dict):
            properties = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            result = {}
            for key, item in value.items():
                sub = properties.get(key, extra if isinstance(extra, dict) else None)
                result[key] = item if sub is None else self._walk(sub, item, (*path, key), visit, depth + 1)
            return result
        if isinstance(value, list):
            prefix = schema.get("prefixItems") or []
            items = schema.get("items")
            result_list = []
            for index, item in enumerate(value):
                sub = prefix[index] if index < len(prefix) else items
                result_list.append(
                    item if not isinstance(sub, dict) else self._walk(sub, item, (*path, index), visit, depth + 1)
                )
            return result_list
        return value


def _fits(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` has the JSON type ``schema`` asks for (enough to pick an ``anyOf`` branch)."""
    if "x-tungsten-file" in schema and schema.get("type", "string") == "string":
        return isinstance(value, str)
    expected = schema.get("type")
    if expected is None:
        return True
    types = expected if isinstance(expected, list) else [expected]
    checks = {
        "null": value is None,
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return any(checks.get(t, False) for t in types)


# -- outputs ------------------------------------------------------------------------
def is_inline(value: str) -> bool:
    return value.startswith("data:")


def file_links(walker: SchemaWalker, outputs: list[Any]) -> list[str]:
    """Of ``outputs`` (each following the walker's schema), the file outputs that are links (``TUNGSTEN_OUTPUT_FILES=url``), to download."""
    links: list[str] = []

    def collect(kind: str, value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, str) and not is_inline(value) and value not in links:
            links.append(value)
        return value

    for output in outputs:
        walker.map_files(output, collect)
    return links


def decode_outputs(walker: SchemaWalker, outputs: list[Any], downloads: Mapping[str, tuple[bytes, str]]) -> list[Any]:
    """The outputs with file fields as file objects; ``downloads`` holds the linked ones' bytes."""

    def decode(kind: str, value: Any, path: tuple[str | int, ...]) -> Any:
        cls = FILE_CLASSES.get(kind, Binary)
        if is_inline(value):
            return cls(value)
        data, content_type = downloads[value]
        return cls.from_bytes(data, normalize_mime_type(content_type) or None)

    return [walker.map_files(output, decode) for output in outputs]


def save_files(value: Any, folder: Path, stem: str, relative_to: Path | None = None) -> Any:
    """``value`` with each file object written under ``folder`` and replaced by its path
    (relative to ``relative_to`` when given).

    Files are named after ``stem`` and where they sit in the output (``3-image.png``,
    ``3-frames-0.png``), so that the same output always lands in the same place.
    """

    def save(item: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(item, File):
            data = item.read_bytes()
            suffix = mimetypes.guess_extension(normalize_mime_type(item.content_type(data))) or ""
            name = "-".join([stem, *(str(p) for p in path)]) if path else stem
            target = folder / f"{_UNSAFE_NAME.sub('_', name)}{suffix}"
            folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            return str(target.relative_to(relative_to) if relative_to is not None else target)
        if isinstance(item, dict):
            return {key: save(sub, (*path, key)) for key, sub in item.items()}
        if isinstance(item, list):
            return [save(sub, (*path, index)) for index, sub in enumerate(item)]
        return item

    return save(value, ())
