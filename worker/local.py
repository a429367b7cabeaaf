"""``tungsten predict``: one prediction in this process, files written to a folder."""

from __future__ import annotations

import inspect
import mimetypes
import uuid
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from tungstenkit._errors import InvalidOutput, TungstenError, URLFetchFailed
from tungstenkit._files import ALLOW_LOCAL_FILES, FILE_POLICY, File, FilePolicy
from tungstenkit._model import ModelDefinition
from tungstenkit._settings import Settings
from tungstenkit.worker.runner import ModelRunner, describe_exception


def predict_once(
    definition: ModelDefinition, values: dict[str, Any], output_dir: Path, settings: Settings | None = None
) -> dict[str, Any]:
    """Set the model up, run it on one input, and return the output with files saved.

    Local paths are accepted as file inputs (this runs on the user's own machine);
    URL inputs are fetched under the same guard as in the server.
    """
    settings = settings or Settings()
    context = {ALLOW_LOCAL_FILES: True, FILE_POLICY: FilePolicy.from_settings(settings)}
    try:
        model_input = definition.input_cls.model_validate(values, context=context)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise TungstenError(f"Invalid input: {problems}") from None
    runner = ModelRunner(definition, settings)
    runner.setup()
    with runner.batch_folder(0):
        failure = runner.prepare([model_input]).get(0)
        if failure is not None:
            # This user runs the model on their own machine: the cause is theirs to read.
            error = failure.error
            shown = error.cause if isinstance(error, URLFetchFailed) and error.cause is not None else error
            raise TungstenError(f"Input {failure.field!r}: {shown}")
        try:
            outputs: Any = runner.model.predict([model_input])
            if inspect.isgenerator(outputs):
                outputs = runner.run_generator(0, outputs, [0], None)
            output = runner.check_outputs(outputs, 1)[0]
        except InvalidOutput:
            raise
        except Exception as exc:
            raise TungstenError(f"predict failed: {describe_exception(exc)}") from exc
        output_dir.mkdir(parents=True, exist_ok=True)
        return cast("dict[str, Any]", _save_files(output.model_dump(mode="python"), output_dir))


def _save_files(value: Any, folder: Path) -> Any:
    if isinstance(value, File):
        data = value.read_bytes()
        target = folder / f"{uuid.uuid4().hex[:12]}{mimetypes.guess_extension(value.content_type(data)) or ''}"
        target.write_bytes(data)
        return str(target)
    if isinstance(value, dict):
        return {k: _save_files(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_save_files(v, folder) for v in value]
    return value
