"""``tungsten push`` and ``tungsten pull``: stored models to and from an OCI registry.

A pull checks everything before anything is stored: the manifest and every blob against
their digests, that the artifact is a model, and that the model loads (as a build
checks it). It writes into a hidden folder of the store that becomes NAME:TAG only once
complete, so a failed pull leaves the store as it was. Content the store already holds
is not downloaded again: a pull of a digest the store has transfers nothing, and a file
some stored model has is copied from it.
"""

from __future__ import annotations

import io
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tungstenkit._artifact import (
    ACCEPTED_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPE,
    describe,
    parse_config,
    parse_manifest,
    sha256_file,
)
from tungstenkit._errors import DigestMismatch, ModelLoadError, RegistryError, RegistryUnreachable, StoreError
from tungstenkit._loader import load_model
from tungstenkit._model import ModelDefinition
from tungstenkit._oci import RegistryReference, parse_reference
from tungstenkit._registry_client import RegistryClient
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource, ModelStore, StoredModel

logger = logging.getLogger(__name__)

#: Largest config blob read (a model's metadata: its schemas, a few kB as a rule).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: The tag a model pulled by digest alone is stored under: ``sha256-`` and 12 hex digits.
DIGEST_TAG_LENGTH = 12

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    logger.info("%s", message)


@dataclass(frozen=True)
class PushResult:
    reference: RegistryReference
    digest: str
    uploaded: int
    present: int


@dataclass(frozen=True)
class PullResult:
    model: StoredModel
    downloaded: int
    copied: int


def push(
    store: ModelStore,
    model_reference: str,
    target: str,
    settings: Settings,
    *,
    insecure: bool = False,
    progress: Progress = _quiet,
) -> PushResult:
    """Upload the stored model ``model_reference`` (``NAME[:TAG]``) to ``target``."""
    if parse_reference(model_reference) is not None:
        raise StoreError(f"Push a stored model by NAME:TAG, not {model_reference!r} (see `tungsten models`)")
    destination = RegistryReference.parse(target)
    if destination.digest:
        raise RegistryError(f"Push to a tag, not a digest: {destination.registry}/{destination.repository}[:TAG]")
    model = store.record_digest(store.get(model_reference))
    tag = destination.tag or model.tag
    destination = RegistryReference(destination.registry, destination.repository, tag)
    artifact = describe(model.metadata)
    client = RegistryClient(destination, settings, insecure=insecure).open()
    uploaded = present = 0
    sent: set[str] = set()
    for record in artifact.files:
        if record.digest in sent:
            continue
        sent.add(record.digest)
        path = model.files_dir / record.path
        if not path.is_file() or path.stat().st_size != record.size:
            raise _modified(model, record.path)
        try:
            if client.upload_blob(record.digest, record.size, lambda path=path: path.open("rb")):  # type: ignore[misc]
                uploaded += 1
                progress(f"Pushed {record.path} ({_size(record.size)})")
            else:
                present += 1
        except DigestMismatch:
            raise _modified(model, record.path) from None
    client.upload_blob(artifact.config_digest, len(artifact.config), lambda: io.BytesIO(artifact.config))
    digest = client.put_manifest(artifact.manifest, MANIFEST_MEDIA_TYPE, tag)
    if digest != model.digest:
        logger.warning("%s was stored with digest %s; its artifact now has %s", model.reference, model.digest, digest)
    return PushResult(destination.with_digest(digest), digest, uploaded, present)


def pull(
    store: ModelStore,
    text: str,
    settings: Settings,
    *,
    insecure: bool = False,
    progress: Progress = _quiet,
) -> PullResult:
    """Fetch the model ``text`` names into the store (unless it holds that digest already)."""
    return _pull(store, RegistryReference.parse(text), settings, insecure=insecure, progress=progress)


def resolve_served_model(
    store: ModelStore,
    reference: str | None,
    module: str | None,
    class_name: str | None,
    settings: Settings,
    *,
    insecure: bool = False,
    progress: Progress = _quiet,
) -> ModelSource:
    """What ``tungsten serve``/``worker`` MODEL names: a path, a registry reference, a stored model.

    A file or folder at exactly that path wins; else a registry reference is pulled
    unless the store has its digest; else the store's rules apply (``NAME[:TAG]``).
    """
    if reference is None:
        return store.resolve(None, module, class_name)
    registry_reference = parse_reference(reference)
    if registry_reference is not None and Path(reference).expanduser().exists():
        progress(f"{reference} is a file or folder here: serving it, not the registry reference")
        return store.resolve(reference, module, class_name)
    if registry_reference is None:
        return store.resolve(reference, module, class_name)
    try:
        result = _pull(store, registry_reference, settings, insecure=insecure, progress=progress)
    except RegistryUnreachable as exc:
        fallback = _pulled_before(store, registry_reference)
        if fallback is None:
            raise
        progress(f"{exc}; serving {fallback.reference} ({fallback.digest}), pulled from {registry_reference} before")
        return fallback.source()
    progress(f"Serving {registry_reference} as {result.model.reference} ({result.model.digest})")
    return result.model.source()


# -- pulling -----------------------------------------------------------------------------
def _pull(
    store: ModelStore, reference: RegistryReference, settings: Settings, *, insecure: bool, progress: Progress
) -> PullResult:
    if reference.digest and (local := store.find_digest(reference.digest)):
        return PullResult(_stored_as(store, local, reference.tag), 0, 0)
    client = RegistryClient(reference, settings, insecure=insecure).open()
    digest = reference.digest or client.manifest_digest(ACCEPTED_MEDIA_TYPES)
    if digest and (local := store.find_digest(digest)):
        return PullResult(_stored_as(store, local, reference.tag), 0, 0)
    data, digest = client.get_manifest(digest, ACCEPTED_MEDIA_TYPES)
    manifest = parse_manifest(data, str(reference))
    if local := store.find_digest(digest):
        return PullResult(_stored_as(store, local, reference.tag), 0, 0)
    config = client.read_blob(manifest.config_digest, manifest.config_size, MAX_CONFIG_BYTES)
    identity = parse_config(config, str(reference), {f.path for f in manifest.files})
    name = identity["name"]
    tag = reference.tag or f"sha256-{digest.removeprefix('sha256:')[:DIGEST_TAG_LENGTH]}"
    _check_free(store, name, tag, digest)
    counts = {"downloaded": 0, "copied": 0}

    def fill(folder: Path) -> dict[str, Any]:
        files = folder / "files"
        files.mkdir()
        have = store.stored_files()
        for record in manifest.files:
            target = files / record.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if _copy_verified(have.get(record.digest), target, record.digest):
                counts["copied"] += 1
                continue
            client.download_blob(record.digest, record.size, target)
            counts["downloaded"] += 1
            progress(f"Pulled {record.path} ({_size(record.size)})")
        now = time.time()
        metadata = dict(
            identity,
            tag=tag,
            created_unix=now,
            created_at=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            source=str(reference.with_digest(digest)),
            pulled_from=str(reference),
            files=[f.as_dict() for f in manifest.files],
            digest=digest,
        )
        definition = _load_checked(files, identity, reference)
        from tungstenkit._dockerfile import write_build_context

        write_build_context(definition, folder, dict(metadata, name=name))
        return metadata

    model = store.add(name, tag, fill)
    return PullResult(model, counts["downloaded"], counts["copied"])


def _stored_as(store: ModelStore, local: StoredModel, tag: str | None) -> StoredModel:
    """The stored model with this digest, under ``tag`` too when one was asked for."""
    if tag is None or tag == local.tag:
        return local
    existing = _find(store, local.name, tag)
    if existing is not None:
        if existing.digest == local.digest:
            return existing
        raise _taken(existing)
    return store.tag(local.reference, f"{local.name}:{tag}")


def _check_free(store: ModelStore, name: str, tag: str, digest: str) -> None:
    existing = _find(store, name, tag)
    if existing is not None and existing.digest != digest:
        raise _taken(existing)


def _find(store: ModelStore, name: str, tag: str) -> StoredModel | None:
    return next((m for m in store.list() if m.name == name and m.tag == tag), None)


def _taken(existing: StoredModel) -> StoreError:
    return StoreError(
        f"{existing.reference} is already in the local store with another digest ({existing.digest}): "
        f"`tungsten remove {existing.reference}` first"
    )


def _pulled_before(store: ModelStore, reference: RegistryReference) -> StoredModel | None:
    pulled = [m for m in store.list() if m.metadata.get("pulled_from") == str(reference)]
    return pulled[-1] if pulled else None


def _copy_verified(source: Path | None, target: Path, digest: str) -> bool:
    """Copy a file the store holds, if it still has the digest (it may have been edited)."""
    if source is None or not source.is_file():
        return False
    shutil.copyfile(source, target)
    if sha256_file(target) == digest:
        return True
    target.unlink()
    return False


def _load_checked(files: Path, identity: dict[str, Any], reference: RegistryReference) -> ModelDefinition:
    """Import the pulled model as a build would, leaving no trace in this process."""
    try:
        with _imports_undone(files):
            definition = load_model(files, identity["module"], identity["class_name"])
    except ModelLoadError as exc:
        raise ModelLoadError(f"The model in {reference} cannot be loaded: {exc}") from None
    return definition


@contextmanager
def _imports_undone(folder: Path) -> Iterator[None]:
    """Forget the modules imported from ``folder`` (it is renamed next) and its ``sys.path`` entry."""
    path = list(sys.path)
    before = set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = path
        root = str(folder.resolve())
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(root):
                del sys.modules[name]


def _modified(model: StoredModel, path: str) -> StoreError:
    return StoreError(
        f"{model.reference}: the stored file {path} no longer matches its digest (the store was edited): "
        "build the model again"
    )


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size} B"


__all__ = ["PullResult", "PushResult", "pull", "push", "resolve_served_model"]
