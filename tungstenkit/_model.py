"""``define_model``: turns a user's class into a servable model, checking it on the spot."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from tungstenkit._base_io import BaseIO, option_names, refuse_unknown_fields
from tungstenkit._errors import ModelDefinitionError
from tungstenkit._files import File
from tungstenkit._masked_image import MaskedImage

T = TypeVar("T", bound=type)

DEFAULT_EXCLUDE_FILES: tuple[str, ...] = (
    ".*/",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    "*.pyd",
    ".venv",
    "venv",
    ".env",
    "env",
    ".git*",
    ".vscode",
    ".*cache",
    ".ipynb_checkpoints",
)

_INPUT_PRIMITIVES: tuple[type, ...] = (int, float, str, bool)
_OUTPUT_PRIMITIVES: tuple[type, ...] = (int, float, str, bool)
_DICT_KEYS: tuple[type, ...] = (str, int, bool)


@dataclass(frozen=True)
class ModelConfig:
    """What ``define_model`` recorded: serving settings and the build-only ones for the Dockerfile."""

    batch_size: int = 1
    gpu: bool = False
    gpu_mem_gb: float = 16.0
    mem_gb: float = 8.0
    python_packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    python_version: str | None = None
    cuda_version: str | None = None
    cudnn_version: str | None = None
    force_install_system_cuda: bool = False
    include_files: tuple[str, ...] = ("*",)
    exclude_files: tuple[str, ...] = DEFAULT_EXCLUDE_FILES
    dockerfile_commands: tuple[str, ...] = ()
    base_image: str | None = None
    readme_md: str | None = None


@dataclass(frozen=True)
class ModelDefinition:
    """A model class together with everything ``define_model`` declared about it."""

    cls: type
    input_cls: type[BaseIO]
    output_cls: type[BaseIO]
    demo_output_cls: type[BaseIO]
    config: ModelConfig
    option_fields: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.cls.__name__

    def input_schema(self) -> dict[str, Any]:
        return self.input_cls.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.output_cls.model_json_schema()


def define_model(
    maybe_cls: type | None = None,
    *,
    input: type[BaseIO],  # Tungstenkit's public parameter name
    output: type[BaseIO],
    demo_output: type[BaseIO] | None = None,
    batch_size: int = 1,
    gpu: bool = False,
    gpu_mem_gb: float = 16.0,
    mem_gb: float = 8.0,
    python_packages: list[str] | None = None,
    system_packages: list[str] | None = None,
    python_version: str | None = None,
    cuda_version: str | None = None,
    cudnn_version: str | None = None,
    force_install_system_cuda: bool = False,
    include_files: list[str] | None = None,
    exclude_files: list[str] | None = None,
    dockerfile_commands: list[str] | None = None,
    base_image: str | None = None,
    readme_md: str | None = None,
) -> Any:
    """Declare a model class.

    The class needs ``predict(self, inputs: list[Input]) -> list[Output]`` (one output
    per input, in order) and may define ``setup(self)``, run once per worker before the
    first prediction, and ``predict_demo(self, inputs) -> (outputs, demo_outputs)``.

    Example::

        @define_model(input=Input, output=Output, batch_size=8, gpu=True)
        class TextToImage:
            def setup(self): ...
            def predict(self, inputs): ...
    """
    _check_io_class("input", input)
    _check_io_class("output", output)
    if demo_output is not None:
        _check_io_class("demo_output", demo_output)
    _check_input_fields(input)
    _check_output_fields(output, "output")
    refuse_unknown_fields(input)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ModelDefinitionError(f"batch_size must be a positive integer, got {batch_size!r}")
    if cuda_version is not None and not gpu:
        raise ModelDefinitionError("cuda_version is set but gpu is not: pass gpu=True or drop cuda_version")
    config = ModelConfig(
        batch_size=batch_size,
        gpu=bool(gpu),
        gpu_mem_gb=float(gpu_mem_gb),
        mem_gb=float(mem_gb),
        python_packages=tuple(python_packages or ()),
        system_packages=tuple(system_packages or ()),
        python_version=python_version,
        cuda_version=cuda_version,
        cudnn_version=cudnn_version,
        force_install_system_cuda=bool(force_install_system_cuda),
        include_files=tuple(include_files) if include_files is not None else ("*",),
        exclude_files=tuple(exclude_files) if exclude_files is not None else DEFAULT_EXCLUDE_FILES,
        dockerfile_commands=tuple(dockerfile_commands or ()),
        base_image=base_image,
        readme_md=readme_md,
    )

    def wrap(cls: T) -> T:
        if not inspect.isclass(cls):
            raise ModelDefinitionError(f"@define_model decorates a class, not {cls!r}")
        _check_methods(cls, has_demo_output=demo_output is not None)
        if "setup" not in _all_attributes(cls):
            cls.setup = _noop_setup  # type: ignore[attr-defined]
        if "predict_demo" not in _all_attributes(cls):
            cls.predict_demo = _default_predict_demo  # type: ignore[attr-defined]
        cls.__tungsten_model__ = ModelDefinition(  # type: ignore[attr-defined]
            cls=cls,
            input_cls=input,
            output_cls=output,
            demo_output_cls=demo_output or output,
            config=config,
            option_fields=option_names(input),
        )
        return cls

    return wrap(maybe_cls) if maybe_cls is not None else wrap


def get_definition(cls: Any) -> ModelDefinition | None:
    """The definition attached by ``define_model``, or None for other objects."""
    definition = getattr(cls, "__tungsten_model__", None)
    if isinstance(definition, ModelDefinition) and definition.cls is cls:
        return definition
    return None


def _noop_setup(self: Any) -> None:
    return None


def _default_predict_demo(self: Any, inputs: list[Any]) -> tuple[list[Any], list[Any]]:
    outputs = self.predict(inputs)
    return outputs, outputs


def _all_attributes(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ if klass is not object for name in vars(klass)}


def _check_io_class(param: str, value: Any) -> None:
    if not (inspect.isclass(value) and issubclass(value, BaseIO)):
        raise ModelDefinitionError(f"define_model({param}=...) must be a subclass of tungstenkit.BaseIO, got {value!r}")


_EXPECTED_SIGNATURES = {"setup": ["self"], "predict": ["self", "inputs"], "predict_demo": ["self", "inputs"]}


def _check_methods(cls: type, has_demo_output: bool) -> None:
    attributes = _all_attributes(cls)
    if "predict" not in attributes:
        raise ModelDefinitionError(
            f"{cls.__name__} has no predict method: define `def predict(self, inputs)` returning one output per input"
        )
    for name, params in _EXPECTED_SIGNATURES.items():
        method = inspect.getattr_static(cls, name, None)
        if method is None:
            continue
        if isinstance(method, (staticmethod, classmethod)) or not callable(method):
            raise ModelDefinitionError(
                f"{cls.__name__}.{name} must be a plain method `def {name}({', '.join(params)})`"
            )
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):
            continue
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(positional) != len(params) or any(
            p.kind in (p.KEYWORD_ONLY,) and p.default is p.empty for p in signature.parameters.values()
        ):
            raise ModelDefinitionError(
                f"{cls.__name__}.{name} must take exactly ({', '.join(params)}), but its signature is {name}{signature}"
            )
    if "predict_demo" in attributes and not has_demo_output:
        raise ModelDefinitionError(
            f"{cls.__name__} defines predict_demo, so define_model needs demo_output=<a BaseIO class>"
        )


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _is_file_type(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, File)


def _is_masked_image(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, MaskedImage)


def mentions_files(annotation: Any) -> bool:
    """Whether values of this type can hold files, at any depth (outputs: lists, dicts, nested IO)."""
    annotation, _ = _unwrap_optional(annotation)
    if _is_file_type(annotation) or _is_masked_image(annotation):
        return True
    if inspect.isclass(annotation) and issubclass(annotation, BaseIO):
        return any(mentions_files(info.annotation) for info in annotation.model_fields.values())
    return any(mentions_files(arg) for arg in typing.get_args(annotation))


def has_file_fields(input_cls: type[BaseIO]) -> bool:
    """Whether an input class has file fields (``Image``, ``MaskedImage``, ...), which need preparing."""
    for info in input_cls.model_fields.values():
        annotation, _ = _unwrap_optional(info.annotation)
        if _is_file_type(annotation) or _is_masked_image(annotation):
            return True
    return False


def _check_input_fields(input_cls: type[BaseIO]) -> None:
    for name, info in input_cls.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        if optional and info.is_required():
            raise ModelDefinitionError(
                f"{input_cls.__name__}.{name} is Optional but required: give it a default with Option(...)"
            )
        if annotation in _INPUT_PRIMITIVES or _is_file_type(annotation) or _is_masked_image(annotation):
            continue
        raise ModelDefinitionError(
            f"{input_cls.__name__}.{name} has type {info.annotation!r}; input fields may be "
            "int, float, str, bool, Image, Video, Audio, Binary or MaskedImage (Optional[...] only with a default)"
        )


def _check_output_fields(output_cls: type[BaseIO], where: str) -> None:
    for name, info in output_cls.model_fields.items():
        if not info.is_required():
            raise ModelDefinitionError(f"{output_cls.__name__}.{name} has a default: output fields cannot be options")
        _check_output_type(info.annotation, f"{output_cls.__name__}.{name}")


def _check_output_type(annotation: Any, where: str) -> None:
    if annotation in _OUTPUT_PRIMITIVES or _is_file_type(annotation):
        return
    if _is_masked_image(annotation):
        raise ModelDefinitionError(
            f"{where}: MaskedImage is an input type; return the image and the mask as two Image fields"
        )
    if inspect.isclass(annotation) and issubclass(annotation, BaseIO):
        _check_output_fields(annotation, where)
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, typing.List) and len(args) == 1:  # noqa: UP006 - accept both spellings
        _check_output_type(args[0], f"{where}[]")
        return
    if origin in (dict, typing.Dict) and len(args) == 2:  # noqa: UP006
        if args[0] not in _DICT_KEYS:
            raise ModelDefinitionError(f"{where}: dict keys must be str, int or bool, not {args[0]!r}")
        _check_output_type(args[1], f"{where}{{}}")
        return
    if origin in (Union, types.UnionType):
        raise ModelDefinitionError(f"{where}: unions and Optional are not supported in outputs")
    raise ModelDefinitionError(
        f"{where} has type {annotation!r}; outputs may be int, float, str, bool, Image, Video, Audio, "
        "Binary, a BaseIO class, list[...] or dict[str|int|bool, ...]"
    )
