"""The local model store under ``$TUNGSTEN_HOME/models``: build, list, tag, remove, resolve.

Each model lives in ``models/<name>/<tag>/`` with ``model.json`` (what was built and
when, the digest of every file and the model's digest: see ``tungstenkit._artifact``),
``files/`` (a snapshot of the model's source folder) and a ``Dockerfile``. Serving reads
the snapshot, so editing the source afterwards changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tungstenkit._artifact import hash_files, with_digest
from tungstenkit._errors import ModelLoadError, ModelNotFound, StoreError
from tungstenkit._loader import DEFAULT_MODULE, load_model, model_file
from tungstenkit._model import ModelDefinition

_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_METADATA = "model.json"


def default_model_name(folder: Path) -> str:
    """A valid model name from a folder name (``text_to_image`` → ``text-to-image``)."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return cleaned or "model"


def parse_reference(reference: str) -> tuple[str, str | None]:
    """``NAME[:TAG]`` split and checked."""
    name, _, tag = reference.partition(":")
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"Invalid model name {name!r}: use lowercase letters, digits and single '.', '_' or '-' between them"
        )
    if tag and not _TAG.fullmatch(tag):
        raise StoreError(f"Invalid tag {tag!r}: use letters, digits, '_', '.' and '-' (at most 128)")
    return name, tag or None


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and what to call it while serving."""

    name: str
    tag: str | None
    root: Path
    module: str
    class_name: str | None
    #: The stored model's digest (None for a model served from a folder).
    digest: str | None = None
    #: When a stored model was built (ISO 8601); None for a folder.
    built_at: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name

    @property
    def description(self) -> str:
        """What is served, for the log: ``mymodel:fc892db (built ...)`` or ``the folder ./mymodel``."""
        if self.tag:
            return f"{self.reference} (built {self.built_at})" if self.built_at else self.reference
        return f"the folder {_shown(self.root)}"

    def load(self) -> ModelDefinition:
        return load_model(self.root, self.module, self.class_name)


@dataclass(frozen=True)
class StoredModel:
    name: str
    tag: str
    path: Path
    metadata: dict[str, Any]

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def created_unix(self) -> float:
        return float(self.metadata["created_unix"])

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    @property
    def digest(self) -> str | None:
        """``sha256:...`` (None for a model stored before digests were recorded)."""
        return self.metadata.get("digest")

    def source(self) -> ModelSource:
        return ModelSource(
            self.name,
            self.tag,
            self.files_dir,
            self.metadata["module"],
            self.metadata["class_name"],
            digest=self.digest,
            built_at=self.metadata.get("created_at"),
        )


class ModelStore:
    def __init__(self, home: Path) -> None:
        self.root = home / "models"

    # -- queries ---------------------------------------------------------------------
    def list(self) -> list[StoredModel]:
        """Every stored model, oldest first."""
        found = []
        if self.root.is_dir():
            for metadata_file in self.root.glob(f"*/*/{_METADATA}"):
                try:
                    metadata = json.loads(metadata_file.read_text())
                except (OSError, ValueError):
                    continue
                found.append(StoredModel(metadata["name"], metadata["tag"], metadata_file.parent, metadata))
        return sorted(found, key=lambda m: m.created_unix)

    def get(self, reference: str | None) -> StoredModel:
        """``NAME:TAG``, ``NAME`` (its newest tag), ``NAME@sha256:...`` or None (the newest model)."""
        models = self.list()
        if reference is None:
            if not models:
                raise ModelNotFound("No models built yet: run `tungsten build` in a model folder first")
            return models[-1]
        if "@" in reference:
            name, _, digest = reference.partition("@")
            parse_reference(name)
            by_digest = [m for m in models if m.name == name and m.digest == digest]
            if not by_digest:
                raise ModelNotFound(f"No model {reference} in the local store (see `tungsten models`)")
            return by_digest[-1]
        name, tag = parse_reference(reference)
        matching = [m for m in models if m.name == name and (tag is None or m.tag == tag)]
        if not matching:
            raise ModelNotFound(f"No model {reference} in the local store (see `tungsten models`)")
        return matching[-1]

    def find_digest(self, digest: str) -> StoredModel | None:
        """The newest stored model with this digest, if any."""
        matching = [m for m in self.list() if m.digest == digest]
        return matching[-1] if matching else None

    def stored_files(self) -> dict[str, Path]:
        """A stored file for each file digest the store holds (to copy rather than download)."""
        found: dict[str, Path] = {}
        for model in self.list():
            for record in model.metadata.get("files", []):
                found.setdefault(record["digest"], model.files_dir / record["path"])
        return found

    def resolve(self, reference: str | None, module: str | None = None, class_name: str | None = None) -> ModelSource:
        """A served model: a stored one by reference, or a model folder/file given as a path.

        The rule: MODEL is a path when it has a ``/``, is ``.`` or ``..``, or ends in ``.py``.
        Anything else is ``NAME[:TAG]``, looked up in the store; only when the store has no
        such model is an existing folder of that name in the working directory served.
        So a folder named like a stored model never hides it (``./NAME`` serves the folder).
        """
        if reference is None:
            return self.get(None).source()
        if is_path(reference):
            return folder_source(Path(reference), module, class_name)
        try:
            return self.get(reference).source()
        except (ModelNotFound, StoreError):
            if Path(reference).exists():
                return folder_source(Path(reference), module, class_name)
            raise

    # -- changes ---------------------------------------------------------------------
    def build(
        self,
        source_dir: Path,
        name: str | None = None,
        tag: str | None = None,
        module: str = DEFAULT_MODULE,
        class_name: str | None = None,
        dockerfile: Any = None,
    ) -> StoredModel:
        """Validate the model in ``source_dir`` and snapshot its files into the store."""
        # Absolute from here on: relative forms (``mymodel``, ``./mymodel``, ``.``, ``..``)
        # name the same folder, and the snapshot compares paths under it.
        source_dir = source_dir.expanduser().resolve()
        file = model_file(source_dir, module)
        root = source_dir if source_dir.is_dir() else file.parent
        definition = load_model(root, module, class_name)
        name = name or default_model_name(root)
        tag = tag or uuid.uuid4().hex[:7]
        parse_reference(f"{name}:{tag}")
        target = self.root / name / tag
        if target.exists():
            raise StoreError(
                f"{name}:{tag} already exists: `tungsten remove {name}:{tag}` first, or choose another tag"
            )
        config = definition.config
        if config.readme_md and not (root / config.readme_md).is_file():
            raise ModelLoadError(f"readme_md={config.readme_md!r} is not a file in {root}")
        staging = self.root / name / f".{tag}.building-{uuid.uuid4().hex[:6]}"
        try:
            _copy_files(root, staging / "files", config.include_files, config.exclude_files, always=[file])
            now = time.time()
            metadata = {
                "name": name,
                "tag": tag,
                "module": file.relative_to(root).with_suffix("").as_posix().replace("/", "."),
                "class_name": definition.name,
                "created_unix": now,
                "created_at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                "source": str(root.resolve()),
                "batch_size": config.batch_size,
                "gpu": config.gpu,
                "gpu_mem_gb": config.gpu_mem_gb,
                "input_schema": definition.input_schema(),
                "output_schema": definition.output_schema(),
            }
            metadata = with_digest(dict(metadata, files=hash_files(staging / "files")))
            (staging / _METADATA).write_text(json.dumps(metadata, indent=2))
            if dockerfile is not None:
                dockerfile(definition, staging, metadata)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredModel(name, tag, target, metadata)

    def tag(self, source: str, target: str) -> StoredModel:
        """Store ``source`` again under the reference ``target`` (``NAME[:TAG]``)."""
        model = self.get(source)
        name, tag = parse_reference(target)
        tag = tag or "latest"
        destination = self.root / name / tag
        if destination.exists():
            raise StoreError(f"{name}:{tag} already exists")
        staging = self.root / name / f".{tag}.tagging-{uuid.uuid4().hex[:6]}"
        shutil.copytree(model.path, staging, symlinks=True)
        metadata = dict(model.metadata, name=name, tag=tag, created_unix=time.time())
        if name != model.name and "files" in metadata:
            metadata = with_digest(metadata)  # the name is part of the model's identity
        (staging / _METADATA).write_text(json.dumps(metadata, indent=2))
        staging.rename(destination)
        return StoredModel(name, tag, destination, metadata)

    def add(self, name: str, tag: str, fill: Callable[[Path], dict[str, Any]]) -> StoredModel:
        """Store a model that ``fill`` writes into an empty folder, returning its metadata.

        Nothing is visible under NAME:TAG until ``fill`` succeeded; if it raises, the
        store is left as it was.
        """
        parse_reference(f"{name}:{tag}")
        target = self.root / name / tag
        if target.exists():
            raise StoreError(
                f"{name}:{tag} already exists: `tungsten remove {name}:{tag}` first, or choose another tag"
            )
        staging = self.root / name / f".{tag}.adding-{uuid.uuid4().hex[:6]}"
        staging.mkdir(parents=True)
        try:
            metadata = dict(fill(staging), name=name, tag=tag)
            (staging / _METADATA).write_text(json.dumps(metadata, indent=2))
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(staging.parent)
            raise
        return StoredModel(name, tag, target, metadata)

    def record_digest(self, model: StoredModel) -> StoredModel:
        """A model stored before digests were recorded, with its file digests and digest added."""
        if model.digest is not None:
            return model
        metadata = with_digest(dict(model.metadata, files=hash_files(model.files_dir)))
        temporary = model.path / f".{_METADATA}.{uuid.uuid4().hex[:6]}"
        temporary.write_text(json.dumps(metadata, indent=2))
        temporary.replace(model.path / _METADATA)
        return StoredModel(model.name, model.tag, model.path, metadata)

    def remove(self, reference: str) -> StoredModel:
        name, tag = parse_reference(reference)
        if tag is None:
            raise StoreError(f"Name the tag to remove: `tungsten remove {name}:TAG`")
        model = self.get(reference)
        shutil.rmtree(model.path)
        _remove_if_empty(model.path.parent)
        return model


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def is_path(reference: str) -> bool:
    """Whether ``tungsten serve MODEL`` takes MODEL as a path rather than a stored model's name."""
    return "/" in reference or reference in (".", "..") or reference.endswith(".py")


def hidden_folder_note(reference: str | None, source: ModelSource) -> str | None:
    """A warning when a stored model was chosen over a folder of the same name, else None."""
    if reference is None or source.tag is None or is_path(reference) or not Path(reference).is_dir():
        return None
    return (
        f"The folder ./{reference} is not served: {reference} names the stored model {source.reference} "
        f"(`tungsten serve ./{reference}` serves the folder)"
    )


def folder_source(path: Path, module: str | None, class_name: str | None) -> ModelSource:
    """A model served straight from its folder (or file), named after the folder."""
    path = path.expanduser()
    file = model_file(path, module or DEFAULT_MODULE)
    folder = path if path.is_dir() else file.parent
    return ModelSource(default_model_name(folder), None, file.parent, file.stem, class_name)


def _shown(folder: Path) -> str:
    """A folder as a user would type it: ``./mymodel`` below the working directory, else absolute."""
    relative = os.path.relpath(folder)
    if relative == "." or relative.startswith(".."):
        return str(folder)
    return "./" + relative


def _copy_files(
    root: Path, target: Path, include: tuple[str, ...], exclude: tuple[str, ...], always: list[Path]
) -> None:
    """Copy the files of ``root`` that ``include`` matches and ``exclude`` does not (gitignore rules)."""
    import pathspec

    included = pathspec.GitIgnoreSpec.from_lines(include)
    excluded = pathspec.GitIgnoreSpec.from_lines(exclude)
    target.mkdir(parents=True)
    chosen = {p.resolve().relative_to(root.resolve()).as_posix() for p in always}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or excluded.match_file(relative):
            continue
        if included.match_file(relative):
            chosen.add(relative)
    for relative in sorted(chosen):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, destination)
