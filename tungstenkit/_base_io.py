"""``BaseIO`` and the ``Field``/``Option`` helpers that model inputs and outputs are built from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from types import GenericAlias
from typing import Any, cast

import pydantic
from pydantic import AfterValidator, ConfigDict, JsonValue, TypeAdapter
from pydantic_core import PydanticCustomError

from tungstenkit._files import FileLimits


class BaseIO(pydantic.BaseModel):
    """Base class of a model's input and output classes.

    Fields are declared with type annotations and, optionally, ``Field(...)`` for
    required fields or ``Option(default, ...)`` for optional ones. Every value, defaults
    included, is validated.

    A model's input class refuses unknown fields (a request with a misspelt field gets a
    422 naming it, rather than running with the default). To ignore them instead, as
    Tungstenkit did, say so on the class: ``class Input(BaseIO, extra="ignore")``.
    Output classes ignore unknown keys of the dicts ``predict`` may return.
    """

    # No ``extra`` here: pydantic's default ignores unknown keys, and an input class that
    # sets ``extra`` itself keeps its choice (see ``refuse_unknown_fields``).
    model_config = ConfigDict(
        validate_assignment=True,
        validate_default=True,
        arbitrary_types_allowed=True,
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Tungstenkit gives every field a description derived from its name, so that
        # generated forms and API docs always have a label.
        missing = [f for f in cls.model_fields.values() if f.description is None]
        if missing:
            for name, info in cls.model_fields.items():
                if info.description is None:
                    info.description = name.replace("_", " ").strip().title()
            cls.model_rebuild(force=True)


def refuse_unknown_fields(input_cls: type[BaseIO]) -> None:
    """Make a model's input class refuse unknown fields, unless the class chose ``extra`` itself.

    Applied by ``define_model`` to its input class, so the API (422) and the worker
    (which validates again) refuse the same inputs, and the JSON schema says
    ``additionalProperties: false``.
    """
    if input_cls.model_config.get("extra") is None:
        input_cls.model_config["extra"] = "forbid"
        input_cls.model_rebuild(force=True)


def Field(  # Tungstenkit's public name
    *,
    description: str | None = None,
    choices: Sequence[Any] | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> Any:
    """Declare a required field, optionally with a description and constraints.

    File fields take bounds of their own, within the server's: ``max_bytes``,
    ``max_pixels`` (images) and ``max_duration_s`` (audio and video).
    """
    limits = FileLimits(max_bytes, max_pixels, max_duration_s)
    return _field(..., description, choices, ge, le, min_length, max_length, limits)


def Option(  # Tungstenkit's public name
    default: Any,
    *,
    description: str | None = None,
    choices: Sequence[Any] | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> Any:
    """Declare an optional field with a default value.

    Inputs whose options differ never share a batch. File fields take the bounds that
    ``Field`` does.
    """
    limits = FileLimits(max_bytes, max_pixels, max_duration_s)
    return _field(default, description, choices, ge, le, min_length, max_length, limits)


def _field(
    default: Any,
    description: str | None,
    choices: Sequence[Any] | None,
    ge: float | None,
    le: float | None,
    min_length: int | None,
    max_length: int | None,
    limits: FileLimits,
) -> Any:
    extra: dict[str, JsonValue] | None = None
    allowed: tuple[Any, ...] = ()
    if choices is not None:
        allowed = tuple(choices)
        if not allowed:
            raise TypeError("choices must not be empty")
        extra = {"choices": list(allowed), "enum": list(allowed)}
    info = pydantic.Field(
        default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        json_schema_extra=extra,
    )
    if allowed:
        info.metadata.append(AfterValidator(_choice_validator(allowed)))
    if limits:
        info.metadata.append(limits)
    return info


def _choice_validator(allowed: tuple[Any, ...]) -> Any:
    listed = ", ".join(repr(c) for c in allowed)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise PydanticCustomError("choice", "Input should be one of {choices}", {"choices": listed})
        return value

    return check


def option_names(io_cls: type[BaseIO]) -> tuple[str, ...]:
    """The names of a class's optional fields: the ones that decide batch grouping."""
    return tuple(name for name, info in io_cls.model_fields.items() if not info.is_required())


def batch_group_key(options: dict[str, Any]) -> str:
    """A short key equal for inputs whose option values are equal.

    ``options`` holds the JSON-ready option values of one input.
    """
    if not options:
        return "-"
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def list_adapter(io_cls: type[BaseIO]) -> TypeAdapter[list[BaseIO]]:
    """Validates a list of ``io_cls`` (a model's input class, known only at run time)."""
    # ``list[io_cls]``, which mypy cannot spell with a class held in a variable.
    return TypeAdapter(cast("type[list[BaseIO]]", GenericAlias(list, (io_cls,))))
