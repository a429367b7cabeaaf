"""Registry credentials: the environment first, then the Docker config as `docker login` writes it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tungstenkit._errors import ConfigError, RegistryError
from tungstenkit._registry_auth import Credentials, find_credentials
from tungstenkit._settings import Settings


def _settings(tmp_path: Path, config: dict | None = None, **changes: object) -> Settings:
    path = tmp_path / "docker" / "config.json"
    if config is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
    return Settings(home=tmp_path / "home", docker_config=path).replace(**changes)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_config_means_anonymous(tmp_path: Path) -> None:
    assert find_credentials("registry.example.com", _settings(tmp_path)) is None


def test_the_docker_config_auths(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        {
            "auths": {
                "registry.example.com": {"auth": _auth("alice", "pa:ss")},
                "https://localhost:5000/v2/": {"auth": _auth("bob", "b")},
                "other.example.com": {"username": "carol", "password": "c"},
            }
        },
    )
    assert find_credentials("registry.example.com", settings) == Credentials("alice", "pa:ss", "")
    assert find_credentials("localhost:5000", settings).username == "bob"  # scheme and path dropped
    assert find_credentials("other.example.com", settings).password == "c"
    assert find_credentials("elsewhere.example.com", settings) is None


def test_the_environment_wins(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        {"auths": {"r.example.com": {"auth": _auth("alice", "a")}}},
        registry_username="ci",
        registry_password="token",
    )
    assert find_credentials("r.example.com", settings).username == "ci"
    with pytest.raises(ConfigError, match="both"):
        Settings(registry_username="ci")


def test_settings_read_docker_config_and_keep_the_password_out_of_repr(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"DOCKER_CONFIG": str(tmp_path), "TUNGSTEN_REGISTRY_USERNAME": "u", "TUNGSTEN_REGISTRY_PASSWORD": "hunter2"}
    )
    assert settings.docker_config == tmp_path / "config.json"
    assert "hunter2" not in repr(settings)
    assert Settings.from_env({"TUNGSTEN_DOCKER_CONFIG": "/x/c.json", "DOCKER_CONFIG": "/y"}).docker_config == Path(
        "/x/c.json"
    )


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$host" = "helped.example.com" ]; then echo \'{"Username": "h", "Secret": "s"}\'; exit 0; fi\n'
        "echo 'credentials not found in native keychain'; exit 1\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = _settings(
        tmp_path,
        {
            "credHelpers": {"helped.example.com": "fake"},
            "credsStore": "fake",
            "auths": {"inline.example.com": {"auth": _auth("i", "p")}},
        },
    )
    assert find_credentials("helped.example.com", settings) == Credentials("h", "s", "")
    assert find_credentials("inline.example.com", settings).username == "i"  # before the store
    assert find_credentials("unknown.example.com", settings) is None  # the store has none: anonymous
    missing = _settings(tmp_path, {"credsStore": "absent"})
    with pytest.raises(RegistryError, match="docker-credential-absent is not on PATH"):
        find_credentials("r.example.com", missing)


def test_a_broken_config_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        find_credentials("r.example.com", Settings(docker_config=path))
    bad = _settings(tmp_path, {"auths": {"r.example.com": {"auth": "%%%"}}})
    with pytest.raises(RegistryError, match="not valid base64") as caught:
        find_credentials("r.example.com", bad)
    assert "%%%" not in str(caught.value)
