"""The local model store under ``$TUNGSTEN_HOME/models``: build, list, tag, remove, resolve.

Each model lives in ``models/<name>/<tag>/`` with ``model.json`` (what was built and
when), ``files/`` (a snapshot of the model's source folder) and a ``Dockerfile``.
Serving reads the snapshot, so editing the source afterwards changes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name

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

    def source(self) -> ModelSource:
        return ModelSource(self.name, self.tag, self.files_dir, self.metadata["module"], self.metadata["class_name"])


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
        """``NAME:TAG``, ``NAME`` (its newest tag) or None (the newest model)."""
        models = self.list()
        if reference is None:
            if not models:
                raise ModelNotFound("No models built yet: run `tungsten build` in a model folder first")
            return models[-1]
        name, tag = parse_reference(reference)
        matching = [m for m in models if m.name == name and (tag is None or m.tag == tag)]
        if not matching:
            raise ModelNotFound(f"No model {reference} in the local store (see `tungsten models`)")
        return matching[-1]

    def resolve(self, reference: str | None, module: str | None = None, class_name: str | None = None) -> ModelSource:
        """A served model: a stored one by reference, or a model folder/file given as a path."""
        if reference is not None and _looks_like_path(reference):
            path = Path(reference).expanduser()
            file = model_file(path, module or DEFAULT_MODULE)
            folder = path if path.is_dir() else file.parent
            return ModelSource(default_model_name(folder), None, file.parent, file.stem, class_name)
        return self.get(reference).source()

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
        file = model_file(source_dir, module)
        root = source_dir if source_dir.is_dir() else file.parent
        definition = load_model(root, module, class_name)
        name = name or default_model_name(root)
        tag = tag or uuid.uuid4().hex[:7]
        parse_reference(f"{name}:{tag}")
        target = self.root / name / tag
        if target.exists():
            raise StoreError(f"{name}:{tag} already exists: `tungsten remove {name}:{tag}` first, or choose another tag")
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
        (staging / _METADATA).write_text(json.dumps(metadata, indent=2))
        staging.rename(destination)
        return StoredModel(name, tag, destination, metadata)

    def remove(self, reference: str) -> StoredModel:
        name, tag = parse_reference(reference)
        if tag is None:
            raise StoreError(f"Name the tag to remove: `tungsten remove {name}:TAG`")
        model = self.get(reference)
        shutil.rmtree(model.path)
        parent = model.path.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
        return model


def _looks_like_path(reference: str) -> bool:
    return "/" in reference or reference.endswith(".py") or reference in (".", "..") or Path(reference).is_dir()


def _copy_files(root: Path, target: Path, include: tuple[str, ...], exclude: tuple[str, ...], always: list[Path]) -> None:
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
