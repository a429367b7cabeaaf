"""Registry credentials, found the way Docker finds them.

In order: ``TUNGSTEN_REGISTRY_USERNAME``/``_PASSWORD``; else the Docker config
(``docker login`` writes it): a credential helper named for the registry in
``credHelpers``, an ``auths`` entry, or the ``credsStore`` helper. A helper is the program
``docker-credential-<name>``, asked with ``get``. Secrets never reach a log or a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tungstenkit._errors import RegistryError
from tungstenkit._settings import Settings

logger = logging.getLogger(__name__)

_HELPER_TIMEOUT_S = 30


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    #: Where they came from, for messages (never the secret itself).
    origin: str = field(default="", compare=False)


def find_credentials(registry: str, settings: Settings) -> Credentials | None:
    """The login for ``registry`` (``host[:port]``), or None to go anonymous."""
    if settings.registry_username:
        return Credentials(settings.registry_username, settings.registry_password, "TUNGSTEN_REGISTRY_USERNAME")
    config = _read_config(settings.docker_config)
    helper = _mapping(config.get("credHelpers")).get(registry)
    if isinstance(helper, str) and helper:
        return _from_helper(helper, registry)
    for key, entry in _mapping(config.get("auths")).items():
        if _server(key) == registry and isinstance(entry, dict):
            found = _from_entry(entry, registry, settings.docker_config)
            if found is not None:
                return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, registry)
    return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryError(f"Cannot read the Docker config {path}: {exc.strerror or exc}") from None
    try:
        config = json.loads(text)
    except ValueError:
        raise RegistryError(f"The Docker config {path} is not valid JSON") from None
    return config if isinstance(config, dict) else {}


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _server(key: str) -> str:
    """An ``auths`` key as a registry: ``https://index.docker.io/v1/`` → ``index.docker.io``."""
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0]


def _from_entry(entry: dict[str, Any], registry: str, path: Path) -> Credentials | None:
    origin = f"{path} (auths)"
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"The login for {registry} in {path} is not valid base64") from None
        if not colon:
            raise RegistryError(f"The login for {registry} in {path} is not USER:PASSWORD")
        return Credentials(username, password, origin)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(secret, str) and user:
        return Credentials(user, secret, origin)
    return None


def _from_helper(helper: str, registry: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise RegistryError(
            f"The Docker config names the credential helper {helper!r}, but docker-credential-{helper} is not on PATH"
        )
    try:
        result = subprocess.run(
            [program, "get"], input=registry.encode(), capture_output=True, timeout=_HELPER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"The credential helper docker-credential-{helper} failed: {exc}") from None
    if result.returncode != 0:
        # Helpers answer "credentials not found" this way: go anonymous, as Docker does.
        logger.debug("docker-credential-%s has no login for %s", helper, registry)
        return None
    try:
        answer = json.loads(result.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]), f"docker-credential-{helper}")
    except (ValueError, KeyError, TypeError):
        raise RegistryError(
            f"The credential helper docker-credential-{helper} gave an answer that is not a login"
        ) from None
