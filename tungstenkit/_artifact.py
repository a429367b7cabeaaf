"""A stored model as an OCI artifact, and the model's digest.

The artifact is an OCI image manifest (``artifactType`` below) whose config blob holds
what identifies the model to a server (name, module, class, batch size, GPU needs and the
input and output schemas) and whose layers are the snapshot's files, one blob per file,
each titled with its path. Both are written canonically (sorted keys, no spaces), so they
follow from the model alone: no tag, time or local path goes in.

**The model's digest is the digest of that manifest**: ``tungsten build`` computes it,
``tungsten push`` prints it (the registry computes the same), ``tungsten pull REF@DIGEST``
takes it, ``tungsten models`` lists it, and a worker compares it with the API's. The tag
is not part of it, so ``tungsten tag`` keeps it; the name is, because the name is the
namespace an API and its workers meet in.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tungstenkit._errors import NotAModelArtifact
from tungstenkit._oci import DIGEST

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.tungsten.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.tungsten.model.config.v1+json"
FILE_MEDIA_TYPE = "application/vnd.tungsten.model.file.v1"
TITLE_ANNOTATION = "org.opencontainers.image.title"
#: What a registry may answer for a reference: ours, and the kinds we name in errors.
ACCEPTED_MEDIA_TYPES = (
    MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")

#: The metadata fields that identify a model (its config blob).
IDENTITY_FIELDS = ("name", "module", "class_name", "batch_size", "gpu", "gpu_mem_gb", "input_schema", "output_schema")
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileRecord:
    """One file of a model snapshot: its path under ``files/``, digest and size."""

    path: str
    digest: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Artifact:
    """The canonical bytes of a model's config blob and manifest."""

    config: bytes
    manifest: bytes
    files: tuple[FileRecord, ...]

    @property
    def digest(self) -> str:
        return sha256_bytes(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256_bytes(self.config)


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def hash_files(folder: Path) -> list[dict[str, Any]]:
    """The file records of a snapshot folder, sorted by path (as ``model.json`` keeps them)."""
    records = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        records.append(FileRecord(relative, sha256_file(path), path.stat().st_size).as_dict())
    return records


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def describe(metadata: dict[str, Any]) -> Artifact:
    """The artifact of a stored model, from its ``model.json`` (which holds the file records)."""
    config = canonical_json({field: metadata[field] for field in IDENTITY_FIELDS})
    files = tuple(FileRecord(f["path"], f["digest"], int(f["size"])) for f in metadata["files"])
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256_bytes(config), "size": len(config)},
        "layers": [
            {
                "mediaType": FILE_MEDIA_TYPE,
                "digest": f.digest,
                "size": f.size,
                "annotations": {TITLE_ANNOTATION: f.path},
            }
            for f in sorted(files, key=lambda f: f.path)
        ],
    }
    return Artifact(config, canonical_json(manifest), files)


def with_digest(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with its ``digest`` (computed from its identity fields and file records)."""
    return dict(metadata, digest=describe(metadata).digest)


@dataclass(frozen=True)
class ParsedManifest:
    config_digest: str
    config_size: int
    files: tuple[FileRecord, ...]


def parse_manifest(data: bytes, reference: str) -> ParsedManifest:
    """Check that ``data`` is a Tungsten model's manifest; ``NotAModelArtifact`` otherwise."""
    manifest = _json_object(data, f"{reference} has a manifest that is not JSON")
    media_type = manifest.get("mediaType")
    if media_type in _INDEXES:
        raise NotAModelArtifact(f"{reference} is an image index (a multi-platform image?), not a Tungsten model")
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if config_type != CONFIG_MEDIA_TYPE:
        kind = " (a container image: push models with `tungsten push`)" if config_type in _IMAGE_CONFIGS else ""
        raise NotAModelArtifact(f"{reference} is not a Tungsten model: its config is {config_type}{kind}")
    assert isinstance(config, dict)
    config_digest, config_size = _descriptor(config, reference)
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise NotAModelArtifact(f"{reference}: the manifest has no list of layers")
    files: list[FileRecord] = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != FILE_MEDIA_TYPE:
            raise NotAModelArtifact(f"{reference}: a layer is not a model file ({FILE_MEDIA_TYPE})")
        digest, size = _descriptor(layer, reference)
        annotations = layer.get("annotations")
        path = annotations.get(TITLE_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(path, str) or not safe_relative_path(path):
            raise NotAModelArtifact(f"{reference}: a layer's path {path!r} is not a relative path inside the model")
        files.append(FileRecord(path, digest, size))
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths) or len({p.casefold() for p in paths}) != len(paths):
        raise NotAModelArtifact(f"{reference}: two layers have the same path")
    folders = {path.rsplit("/", 1)[0] for path in paths if "/" in path}
    folders |= {folder.rsplit("/", i)[0] for folder in folders for i in range(1, folder.count("/") + 1)}
    if folders & set(paths):
        raise NotAModelArtifact(f"{reference}: a layer's path is also the folder of another")
    return ParsedManifest(config_digest, config_size, tuple(sorted(files, key=lambda f: f.path)))


def parse_config(data: bytes, reference: str, paths: set[str]) -> dict[str, Any]:
    """The identity fields of a model's config blob, checked; ``NotAModelArtifact`` otherwise."""
    config = _json_object(data, f"{reference}: the model's metadata is not JSON")
    problems = []
    if not isinstance(config.get("name"), str) or not _NAME.match(config["name"]):
        problems.append("name")
    for field in ("module", "class_name"):
        if not isinstance(config.get(field), str) or not _MODULE.match(config[field]):
            problems.append(field)
    batch_size = config.get("batch_size")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        problems.append("batch_size")
    if not isinstance(config.get("gpu"), bool):
        problems.append("gpu")
    if not isinstance(config.get("gpu_mem_gb"), (int, float)) or isinstance(config.get("gpu_mem_gb"), bool):
        problems.append("gpu_mem_gb")
    for field in ("input_schema", "output_schema"):
        schema = config.get(field)
        if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
            problems.append(field)
    if problems:
        raise NotAModelArtifact(f"{reference}: the model's metadata has no valid {', '.join(problems)}")
    module_file = config["module"].replace(".", "/") + ".py"
    if module_file not in paths:
        raise NotAModelArtifact(f"{reference}: the model's module {module_file} is not among its files")
    return {field: config[field] for field in IDENTITY_FIELDS}


def safe_relative_path(path: str) -> bool:
    """A path that stays inside the folder it is joined to (no ``..``, not absolute)."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _descriptor(descriptor: dict[str, Any], reference: str) -> tuple[str, int]:
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise NotAModelArtifact(f"{reference}: a descriptor has no sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise NotAModelArtifact(f"{reference}: a descriptor has no valid size")
    return digest, size


def _json_object(data: bytes, message: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise NotAModelArtifact(message) from None
    if not isinstance(value, dict):
        raise NotAModelArtifact(message)
    return value
