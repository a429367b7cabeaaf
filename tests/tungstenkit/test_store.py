from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support import EXAMPLES, MODELS
from tungstenkit._errors import ModelLoadError, ModelNotFound, StoreError
from tungstenkit._store import ModelStore, default_model_name, hidden_folder_note, parse_reference


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "home")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "My_Model"
    shutil.copytree(MODELS / "recorder", folder)
    (folder / "weights.bin").write_bytes(b"w" * 10)
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"x")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    return folder


def test_default_names() -> None:
    assert default_model_name(EXAMPLES / "text_to_image") == "text-to-image"
    assert parse_reference("a-b.c_d:v1.0") == ("a-b.c_d", "v1.0")
    with pytest.raises(StoreError):
        parse_reference("Bad Name")
    with pytest.raises(StoreError):
        parse_reference("ok:bad tag")


def test_build_snapshots_the_files(store: ModelStore, model_dir: Path) -> None:
    model = store.build(model_dir)
    assert model.name == "my-model" and len(model.tag) == 7
    files = sorted(p.relative_to(model.files_dir).as_posix() for p in model.files_dir.rglob("*") if p.is_file())
    assert files == ["tungsten_model.py", "weights.bin"]
    (model_dir / "tungsten_model.py").write_text("raise SystemExit('edited')")
    assert store.get(model.reference).source().load().name == "Recorder"  # the snapshot is unaffected


def test_references_resolve_to_the_latest(store: ModelStore, model_dir: Path) -> None:
    first = store.build(model_dir, "m", "v1")
    time.sleep(0.01)  # distinct creation times (not a synchronisation)
    second = store.build(model_dir, "m", "v2")
    other = store.build(model_dir, "other", "v1")
    assert store.get("m:v1").path == first.path
    assert store.get("m").path == second.path
    assert store.get(None).path == other.path
    with pytest.raises(ModelNotFound):
        store.get("m:v3")
    with pytest.raises(StoreError, match="already exists"):
        store.build(model_dir, "m", "v1")


def test_tag_and_remove(store: ModelStore, model_dir: Path) -> None:
    store.build(model_dir, "m", "v1")
    tagged = store.tag("m:v1", "n:prod")
    assert tagged.reference == "n:prod" and store.get("n").source().load().name == "Recorder"
    store.remove("m:v1")
    with pytest.raises(ModelNotFound):
        store.get("m")
    with pytest.raises(StoreError, match="Name the tag"):
        store.remove("n")


def test_paths_resolve_without_the_store(store: ModelStore) -> None:
    source = store.resolve(str(EXAMPLES / "text_to_image"))
    assert source.name == "text-to-image" and source.tag is None
    with pytest.raises(ModelLoadError):
        store.resolve(str(EXAMPLES))


def test_build_refuses_broken_models(store: ModelStore) -> None:
    with pytest.raises(ModelLoadError, match="a_module_that_does_not_exist"):
        store.build(MODELS / "broken_import")
    with pytest.raises(ModelLoadError, match="several models"):
        store.build(MODELS / "two_models")
    assert store.build(MODELS / "two_models", class_name="Second").metadata["class_name"] == "Second"


def test_a_name_means_the_stored_model_even_beside_a_folder_of_that_name(
    store: ModelStore, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's promise: editing the folder after `tungsten build` does not change the built model."""
    workspace = model_dir.parent
    shutil.copytree(model_dir, workspace / "mymodel")
    built = store.build(workspace / "mymodel")
    monkeypatch.chdir(workspace)
    for reference in ("mymodel", f"mymodel:{built.tag}"):
        source = store.resolve(reference)
        assert (source.name, source.tag, source.root) == ("mymodel", built.tag, built.files_dir)
        assert source.description == f"mymodel:{built.tag} (built {built.metadata['created_at']})"
    note = hidden_folder_note("mymodel", store.resolve("mymodel"))
    assert note is not None and "./mymodel" in note and f"mymodel:{built.tag}" in note
    for path in ("./mymodel", "mymodel/", str(workspace / "mymodel"), "mymodel/tungsten_model.py"):
        source = store.resolve(path)
        assert (source.name, source.tag, source.root) == ("mymodel", None, workspace / "mymodel")
        assert source.description == "the folder ./mymodel"
        assert hidden_folder_note(path, source) is None
    monkeypatch.chdir(workspace / "mymodel")
    assert store.resolve(".").root == workspace / "mymodel"


def test_a_name_missing_from_the_store_falls_back_to_a_folder_here(
    store: ModelStore, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(model_dir.parent)
    source = store.resolve("My_Model")  # not even a valid model name: only the folder can be meant
    assert (source.tag, source.root, source.description) == (None, model_dir, "the folder ./My_Model")
    with pytest.raises(ModelNotFound, match="No model elsewhere"):
        store.resolve("elsewhere")
