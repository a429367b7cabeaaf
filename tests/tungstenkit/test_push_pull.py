"""How `serve`/`worker` MODEL is read: a file or folder at that path, a registry reference, a stored model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import MODELS
from tungstenkit._errors import ModelNotFound, RegistryUnreachable, StoreError
from tungstenkit._push_pull import push, resolve_served_model
from tungstenkit._redis_server import free_port
from tungstenkit._settings import Settings
from tungstenkit._store import ModelStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", docker_config=tmp_path / "no-docker-config.json", registry_timeout_s=5)


def test_a_folder_at_the_exact_path_wins_over_the_reference(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    folder = tmp_path / f"localhost:{closed}" / "weighted"
    shutil.copytree(MODELS / "weighted", folder)
    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    source = resolve_served_model(
        ModelStore(settings.home), f"localhost:{closed}/weighted", None, None, settings, progress=said.append
    )
    assert source.root == folder.resolve() and source.digest is None
    assert said == [f"localhost:{closed}/weighted is a file or folder here: serving it, not the registry reference"]
    # Without that folder the same text is a registry reference, and the registry is asked.
    with pytest.raises(RegistryUnreachable, match=f"Cannot reach the registry localhost:{closed}"):
        resolve_served_model(ModelStore(settings.home), f"localhost:{closed}/other", None, None, settings)


def test_names_and_paths_resolve_as_before(settings: Settings, tmp_path: Path) -> None:
    store = ModelStore(settings.home)
    built = store.build(MODELS / "weighted", "weighted", "v1")
    assert resolve_served_model(store, "weighted:v1", None, None, settings).digest == built.digest
    assert resolve_served_model(store, f"weighted@{built.digest}", None, None, settings).tag == "v1"
    assert resolve_served_model(store, str(MODELS / "weighted"), None, None, settings).digest is None
    with pytest.raises(ModelNotFound):
        resolve_served_model(store, "weighted@sha256:" + "0" * 64, None, None, settings)


def test_a_reference_that_was_pulled_is_served_when_the_registry_is_down(settings: Settings) -> None:
    store = ModelStore(settings.home)
    built = store.build(MODELS / "weighted", "weighted", "v1")
    reference = f"127.0.0.1:{free_port()}/team/weighted:v1"
    said: list[str] = []
    with pytest.raises(RegistryUnreachable):
        resolve_served_model(store, reference, None, None, settings, progress=said.append)
    # Mark it as pulled from there (as a pull records it): now the store's copy is served.
    path = built.path / "model.json"
    path.write_text(
        path.read_text().replace('"name": "weighted",', f'"name": "weighted", "pulled_from": "{reference}",')
    )
    source = resolve_served_model(store, reference, None, None, settings, progress=said.append)
    assert source.digest == built.digest
    assert "connection refused; serving weighted:v1" in said[-1]


def test_push_takes_a_stored_model_and_a_tag(settings: Settings) -> None:
    store = ModelStore(settings.home)
    store.build(MODELS / "weighted", "weighted", "v1")
    with pytest.raises(StoreError, match="Push a stored model by NAME:TAG"):
        push(store, "localhost:5000/team/weighted:v1", "localhost:5000/team/x", settings)
    with pytest.raises(Exception, match="Push to a tag, not a digest"):
        push(store, "weighted:v1", "localhost:5000/team/x@sha256:" + "0" * 64, settings)
