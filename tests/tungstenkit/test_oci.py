"""Registry references: what counts as one (Docker's rule), and what is refused."""

from __future__ import annotations

import pytest

from tungstenkit._errors import RegistryError
from tungstenkit._oci import RegistryReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("localhost:5000/model", "localhost:5000", "model", None, None),
        ("localhost/team/model:v1", "localhost", "team/model", "v1", None),
        ("registry.example.com/team/text-to-image:v1.2", "registry.example.com", "team/text-to-image", "v1.2", None),
        (f"ghcr.io/acme/m@{DIGEST}", "ghcr.io", "acme/m", None, DIGEST),
        (f"127.0.0.1:5000/a/b/c:latest@{DIGEST}", "127.0.0.1:5000", "a/b/c", "latest", DIGEST),
        ("[::1]:5000/m:v1", "[::1]:5000", "m", "v1", None),
    ],
)
def test_references_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    reference = parse_reference(text)
    assert reference == RegistryReference(registry, repository, tag, digest)
    assert str(reference) == text


@pytest.mark.parametrize(
    "text",
    [
        "text-to-image:v1",  # a stored model
        "text-to-image",
        "examples/text_to_image",  # a relative path: its first part names no registry
        "./examples/text_to_image",
        "../models/m",
        "/abs/path/model",
        "tungsten_model.py",
        "localhost:5000",  # no repository
        "localhost:5000/Upper",  # invalid as a reference: left to the path rule
    ],
)
def test_names_and_paths_are_not_references(text: str) -> None:
    assert parse_reference(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:v1", "is not a registry reference"),
        ("localhost:5000/Upper", "invalid repository"),
        ("localhost:5000/m:bad tag", "invalid tag"),
        ("localhost:5000/m@sha256:abc", "64 lowercase hex"),
        ("local_host.x:5000/m", "not a valid registry host"),
    ],
)
def test_strict_parsing_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        RegistryReference.parse(text)


def test_loopback_registries() -> None:
    assert RegistryReference.parse("localhost:5000/m").is_loopback
    assert RegistryReference.parse("127.0.0.7:5000/m").is_loopback
    assert RegistryReference.parse("[::1]:5000/m").is_loopback
    assert not RegistryReference.parse("registry.example.com/m").is_loopback
    assert not RegistryReference.parse("10.0.0.1:5000/m").is_loopback
