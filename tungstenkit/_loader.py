"""Finding and importing a model file, and picking the model class in it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tungstenkit._errors import ModelDefinitionError, ModelLoadError
from tungstenkit._model import ModelDefinition, get_definition

DEFAULT_MODULE = "tungsten_model"


def model_file(location: str | Path, module: str = DEFAULT_MODULE) -> Path:
    """The Python file of a model given as a directory (holding ``<module>.py``) or a file."""
    path = Path(location).expanduser()
    if path.is_dir():
        candidate = path / (module.replace(".", "/") + ".py")
        if not candidate.is_file():
            raise ModelLoadError(f"No {candidate.name} in {path}: pass -m/--model-module to name the model's module")
        return candidate.resolve()
    if path.is_file():
        if path.suffix != ".py":
            raise ModelLoadError(f"{path} is not a Python file")
        return path.resolve()
    raise ModelLoadError(f"No model file or directory at {path}")


def load_model(location: str | Path, module: str = DEFAULT_MODULE, class_name: str | None = None) -> ModelDefinition:
    """Import the model file and return the definition of its model class.

    The file's folder goes first on ``sys.path`` so the model can import its
    neighbours, as it would when run from that folder.
    """
    file = model_file(location, module)
    module_name = file.stem
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"Cannot import {file}")
    loaded = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except ModelDefinitionError as exc:
        _restore(module_name, previous)
        raise ModelLoadError(f"{file.name}: {exc}") from exc
    except BaseException as exc:
        _restore(module_name, previous)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ModelLoadError(f"Importing {file} failed: {type(exc).__name__}: {exc}") from exc
    return _pick_class(loaded, file, class_name)


def _restore(module_name: str, previous: object) -> None:
    if previous is None:
        sys.modules.pop(module_name, None)
    else:
        sys.modules[module_name] = previous  # type: ignore[assignment]


def _pick_class(module: object, file: Path, class_name: str | None) -> ModelDefinition:
    found = {}
    for name, value in vars(module).items():
        definition = get_definition(value)
        if definition is not None and value.__module__ == getattr(module, "__name__", None):
            found[name] = definition
    if class_name is not None:
        value = getattr(module, class_name, None)
        if value is None:
            raise ModelLoadError(f"{file.name} has no class {class_name}")
        definition = get_definition(value)
        if definition is None:
            raise ModelLoadError(f"{class_name} in {file.name} is not decorated with @define_model")
        return definition
    if not found:
        raise ModelLoadError(f"{file.name} defines no model: decorate the model class with @define_model(...)")
    if len(found) > 1:
        names = ", ".join(sorted(found))
        raise ModelLoadError(f"{file.name} defines several models ({names}): choose one with -c/--model-class")
    return next(iter(found.values()))
