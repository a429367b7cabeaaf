"""Settings read from the environment, and refused when unusable."""

from __future__ import annotations

import pytest

from tungstenkit._errors import ConfigError
from tungstenkit._files import FilePolicy
from tungstenkit._settings import Settings, cors_origins


def test_file_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TUNGSTEN_MAX_FILE_BYTES": "1000",
            "TUNGSTEN_MAX_IMAGE_PIXELS": "4096",
            "TUNGSTEN_URL_ALLOWLIST": "10.0.0.0/8, files.internal:8443",
            "TUNGSTEN_URL_CONNECT_TIMEOUT_S": "1.5",
            "TUNGSTEN_URL_MAX_REDIRECTS": "2",
            "TUNGSTEN_OUTPUT_FILES": "url",
            "TUNGSTEN_PUBLIC_URL": "https://models.example.com",
        }
    )
    assert settings.output_files == "url" and settings.public_url == "https://models.example.com"
    policy = FilePolicy.from_settings(settings)
    assert policy.max_file_bytes == 1000 and policy.fetch.max_bytes == 1000
    assert policy.max_image_pixels == 4096
    assert policy.fetch.connect_timeout_s == 1.5 and policy.fetch.max_redirects == 2
    assert policy.fetch.allowlist.allows("files.internal", None, 8443, "https")
    assert Settings.from_env(settings.to_env()) == settings  # what child processes get back


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TUNGSTEN_OUTPUT_FILES", "links", "expected one of data_uri, url"),
        ("TUNGSTEN_URL_ALLOWLIST", "10.0.0.0/40", "TUNGSTEN_URL_ALLOWLIST"),
        ("TUNGSTEN_URL_ALLOWLIST", "files.internal:99999", "TUNGSTEN_URL_ALLOWLIST"),
        ("TUNGSTEN_PUBLIC_URL", "models.example.com", "must start with http"),
        ("TUNGSTEN_MAX_FILE_BYTES", "0", "must be positive"),
        ("TUNGSTEN_MAX_IMAGE_PIXELS", "many", "not a valid int"),
        ("TUNGSTEN_CORS_ORIGINS", "*", "list the origins explicitly"),
        ("TUNGSTEN_CORS_ORIGINS", "https://a.example, https://*.example", "list the origins explicitly"),
        ("TUNGSTEN_CORS_ORIGINS", "app.example.com", "is not an origin"),
        ("TUNGSTEN_CORS_ORIGINS", "https://app.example.com/path", "is not an origin"),
        ("TUNGSTEN_MAX_BUFFERED_BYTES", "1000", "must be at least TUNGSTEN_MAX_BODY_BYTES"),
        ("TUNGSTEN_HEADER_TIMEOUT_S", "0", "must be positive"),
        ("TUNGSTEN_MAX_HEADER_BYTES", "100", "at least 1024"),
        ("TUNGSTEN_MIN_BODY_BYTES_PER_S", "-1", "0 or more"),
        ("TUNGSTEN_HEARTBEAT_TTL_S", "1.5", "must be at least twice TUNGSTEN_HEARTBEAT_INTERVAL_S"),
        ("TUNGSTEN_REDIS_MAXMEMORY", "lots", "expected a share of memory"),
        ("TUNGSTEN_REDIS_MAXMEMORY", "120%", "expected a share of memory"),
        ("TUNGSTEN_REDIS_KEY_FILE", "/etc/client.key", "needs TUNGSTEN_REDIS_CERT_FILE"),
    ],
)
def test_unusable_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: value})


def test_cors_origins_are_parsed() -> None:
    assert cors_origins(" https://app.example.com/, http://localhost:8080 ,") == (
        "https://app.example.com",
        "http://localhost:8080",
    )
    assert cors_origins("") == ()


def test_a_paused_worker_is_not_taken_for_dead_by_default() -> None:
    settings = Settings()
    assert settings.heartbeat_ttl_s >= 10 * settings.heartbeat_interval_s  # outlasts a multi-second stall
    assert Settings.from_env({"TUNGSTEN_HEARTBEAT_TTL_S": "4"}).heartbeat_ttl_s == 4


def test_the_embedded_redis_memory_bound_reads_as_redis_does() -> None:
    from tungstenkit._redis_server import maxmemory_bytes

    assert maxmemory_bytes("0") == 0
    assert maxmemory_bytes("512mb") == 512 * 1024**2 and maxmemory_bytes("4GB") == 4 * 1024**3
    assert maxmemory_bytes("1g") == 10**9 and maxmemory_bytes("100k") == 100_000
    assert 0 < maxmemory_bytes("25%") <= maxmemory_bytes("100%")
