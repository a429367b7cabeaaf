"""Validating the body of ``POST /predictions``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from tungstenkit._base_io import BaseIO, batch_group_key, list_adapter, option_names
from tungstenkit._files import DEFER_DECODING, FILE_POLICY, FilePolicy
from tungstenkit._media import configure_pillow
from tungstenkit._model import has_file_fields
from tungstenkit.app.error_responses import InvalidInput, MalformedBody, PayloadTooLarge
from tungstenkit.app.json_shape import JsonShapeGuard

#: Validation error types that mean "too many bytes", answered with 413 rather than 422.
_TOO_LARGE = frozenset({"file_too_large"})
#: JSON values one input may hold: a few for the object itself (and keys an input class
#: that allows extra fields ignores), and a few per field (a ``MaskedImage`` is an object of two).
_VALUES_PER_INPUT = 16
_VALUES_PER_FIELD = 4


class InputParser:
    """Turns a request body into validated inputs ready to queue."""

    def __init__(self, input_cls: type[BaseIO], max_inputs: int, files: FilePolicy | None = None) -> None:
        self._adapter = list_adapter(input_cls)
        self._options = set(option_names(input_cls))
        self._max_inputs = max_inputs
        self._max_values = max_inputs * (_VALUES_PER_INPUT + _VALUES_PER_FIELD * _count_fields(input_cls))
        self._files = files or FilePolicy()
        # An empty allowance for local files: inputs from HTTP may not name local paths.
        # Masks are checked here and binarised by the worker, which validates again.
        self._context = {FILE_POLICY: self._files, DEFER_DECODING: True}
        if has_file_fields(input_cls):
            configure_pillow(self._files.max_image_pixels)

    def shape_guard(self) -> JsonShapeGuard:
        """A guard that refuses, while it arrives, a body that could not be valid inputs."""
        return JsonShapeGuard(self._max_inputs, self._max_values)

    def parse(self, body: bytes | bytearray) -> tuple[list[str], list[str]]:
        """Each input as a JSON object string, and each input's option group key."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise MalformedBody(f"The body is not valid JSON: {_short(exc)}") from None
        if not isinstance(data, list):
            raise InvalidInput(_detail((), "Input should be a list of input objects", "list_type"))
        if not data:
            raise InvalidInput(_detail((), "The list of inputs must not be empty", "too_short"))
        if len(data) > self._max_inputs:
            raise InvalidInput(
                _detail((), f"At most {self._max_inputs} inputs per request, got {len(data)}", "too_long")
            )
        try:
            inputs = self._adapter.validate_python(data, context=self._context)
        except ValidationError as exc:
            errors = [
                {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
                for error in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            too_large = [error for error in errors if error["type"] in _TOO_LARGE]
            if too_large:
                raise PayloadTooLarge(too_large) from None
            raise InvalidInput(errors) from None
        encoded = [item.model_dump_json() for item in inputs]
        if self._options:
            groups = [batch_group_key(item.model_dump(mode="json", include=self._options)) for item in inputs]
        else:
            groups = ["-"] * len(inputs)
        return encoded, groups


def _count_fields(cls: type[BaseModel]) -> int:
    """The fields of ``cls``, those of nested models included."""
    count = 0
    for info in cls.model_fields.values():
        count += 1
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            count += _count_fields(annotation)
    return count


def _detail(loc: tuple[Any, ...], msg: str, kind: str) -> list[dict[str, Any]]:
    return [{"loc": ["body", *loc], "msg": msg, "type": kind}]


def _short(exc: BaseException) -> str:
    return "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
