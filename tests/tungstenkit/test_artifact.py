"""The model artifact and the model's digest: what changes it, what does not, what is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support import MODELS
from tungstenkit._artifact import (
    CONFIG_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    canonical_json,
    describe,
    parse_config,
    parse_manifest,
    sha256_bytes,
)
from tungstenkit._errors import NotAModelArtifact
from tungstenkit._store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "home")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    copy = tmp_path / "weighted"
    shutil.copytree(MODELS / "weighted", copy)
    return copy


def test_the_digest_is_the_manifests_and_follows_the_content(store: ModelStore, folder: Path) -> None:
    first = store.build(folder, "weighted", "v1")
    assert first.digest == describe(first.metadata).digest == sha256_bytes(describe(first.metadata).manifest)
    assert [f["path"] for f in first.metadata["files"]] == [
        "tungsten_model.py",
        "weights/empty.bin",
        "weights/scale.json",
    ]
    # Built again under another tag, at another time: the same model, the same digest.
    assert store.build(folder, "weighted", "v2").digest == first.digest
    # The tag is a label: tagging keeps the digest. The name is the namespace: it changes it.
    assert store.tag("weighted:v1", "weighted:prod").digest == first.digest
    renamed = store.tag("weighted:v1", "other:v1")
    assert renamed.digest != first.digest and renamed.digest == describe(renamed.metadata).digest
    # A changed file, or a changed batch size, is another model.
    (folder / "weights" / "scale.json").write_text('{"scale": 8}')
    assert store.build(folder, "weighted", "v3").digest != first.digest


def test_the_manifest_is_an_oci_artifact_of_our_types(store: ModelStore, folder: Path) -> None:
    model = store.build(folder, "weighted", "v1")
    artifact = describe(model.metadata)
    manifest = json.loads(artifact.manifest)
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE and manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert {layer["mediaType"] for layer in manifest["layers"]} == {FILE_MEDIA_TYPE}
    config = json.loads(artifact.config)
    assert config["name"] == "weighted" and config["batch_size"] == 1 and "tag" not in config
    assert "properties" in config["input_schema"]
    parsed = parse_manifest(artifact.manifest, "ref")
    assert parsed.config_digest == artifact.config_digest
    assert parse_config(artifact.config, "ref", {f.path for f in parsed.files})["class_name"] == "Weighted"


def _manifest(
    config_type: str = CONFIG_MEDIA_TYPE,
    title: object = "tungsten_model.py",
    layers2: str | None = None,
    **extra: object,
) -> bytes:
    def layer(path: object) -> dict:
        return {
            "mediaType": FILE_MEDIA_TYPE,
            "digest": "sha256:" + "0" * 64,
            "size": 1,
            "annotations": {TITLE_ANNOTATION: path},
        }

    layers = [layer(title)] + ([layer(layers2)] if layers2 else [])
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config_type, "digest": "sha256:" + "1" * 64, "size": 2},
            "layers": layers,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (_manifest("application/vnd.oci.image.config.v1+json"), "a container image"),
        (_manifest("application/vnd.other+json"), "is not a Tungsten model"),
        (canonical_json({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}), "image index"),
        (_manifest(title="../../etc/passwd"), "not a relative path"),
        (_manifest(title="/etc/passwd"), "not a relative path"),
        (_manifest(title=None), "not a relative path"),
        (_manifest(title="a/b", layers2="a"), "also the folder of another"),
        (_manifest(title="a/b/c", layers2="a"), "also the folder of another"),
        (_manifest(title="x", layers2="X"), "the same path"),
    ],
)
def test_what_is_not_a_model_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(NotAModelArtifact, match=message):
        parse_manifest(data, "ref")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_schema": "not a schema"}, "input_schema"),
        ({"batch_size": 0}, "batch_size"),
        ({"module": "../evil"}, "module"),
        ({"module": "elsewhere"}, "elsewhere.py is not among its files"),
    ],
)
def test_metadata_that_cannot_be_a_model_is_refused(
    store: ModelStore, folder: Path, change: dict, message: str
) -> None:
    config = json.loads(describe(store.build(folder, "weighted", "v1").metadata).config)
    with pytest.raises(NotAModelArtifact, match=message):
        parse_config(canonical_json({**config, **change}), "ref", {"tungsten_model.py"})
