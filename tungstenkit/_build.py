"""``tungsten build``: store the model, write its Dockerfile, and build its image when asked or able.

Storing comes first and stands on its own: when the image fails afterwards, the model
stays stored and the error says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from tungstenkit import _docker
from tungstenkit._dockerfile import write_build_context
from tungstenkit._errors import StoreError, TungstenError
from tungstenkit._store import ModelStore, StoredModel, parse_reference


class ImageFailed(TungstenError):
    """The model was stored, and only its image could not be built."""


def build_model(
    store: ModelStore,
    directory: Path,
    reference: str | None,
    module: str,
    class_name: str | None,
    image: bool | None,
    log: IO[str],
) -> StoredModel:
    """Store the model in ``directory`` and build its image.

    ``image``: True requires an image (an error when no Docker engine answers, before
    anything is stored), False skips it, None builds it when an engine answers.
    Progress and Docker's log go to ``log``.
    """
    name, tag = parse_reference(reference) if reference else (None, None)
    problem = _docker.engine_problem() if image is not False else None
    if image and problem:
        raise TungstenError(f"--image needs a Docker engine, and none is reachable: {problem}")
    try:
        model = store.build(directory, name, tag, module, class_name, dockerfile=write_build_context)
    except OSError as exc:
        raise StoreError(f"Cannot write the model store under {store.root}: {exc.strerror or exc}") from None
    log.write(f"Stored {model.reference} in {model.path}\n")
    command = f"docker build -t {model.reference} {model.path}"
    if image is False or problem:
        why = "--no-image" if image is False else f"no Docker engine is reachable ({problem})"
        log.write(f"Skipped the image ({why}); to build it later: {command}\n")
        return model
    log.write(f"Building the image {model.reference}\n")
    log.flush()
    try:
        _docker.build_image(model.path, model.reference, log)
    except _docker.ImageBuildFailed as exc:
        raise ImageFailed(
            f"The model was stored as {model.reference} (`tungsten serve {model.reference}` serves it), "
            f"but its image failed to build: {exc.reason} (docker build exit code {exc.exit_code}; "
            f"to retry: {command})"
        ) from None
    log.write(f"Built the image {model.reference}: docker run --rm -p 3000:3000 {model.reference}\n")
    return model
