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


def test_switches_read_on_or_off_and_refuse_other_words() -> None:
    assert Settings.from_env({"TUNGSTEN_API_KEYS": " On ", "TUNGSTEN_CANCEL_ON_DISCONNECT": "no"}).api_keys
    assert not Settings.from_env({"TUNGSTEN_CANCEL_ON_DISCONNECT": "0"}).cancel_on_disconnect
    with pytest.raises(ConfigError, match=r"^TUNGSTEN_API_KEYS='maybe': expected on or off$"):
        Settings.from_env({"TUNGSTEN_API_KEYS": "maybe"})
    with pytest.raises(ConfigError, match=r"^TUNGSTEN_MAX_WAIT_S='soon' is not a valid float$"):
        Settings.from_env({"TUNGSTEN_MAX_WAIT_S": "soon"})


def test_conventional_names_fill_in_and_empty_means_unset() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://a:6379"}).redis_url == "redis://a:6379"
    both = {"TUNGSTEN_REDIS_URL": "redis://b:6379", "REDIS_URL": "redis://a:6379"}
    assert Settings.from_env(both).redis_url == "redis://b:6379"
    assert Settings.from_env({"TUNGSTEN_REDIS_URL": "", "REDIS_URL": "redis://a:6379"}).redis_url == "redis://a:6379"
    assert str(Settings.from_env({"DOCKER_CONFIG": "/etc/docker"}).docker_config) == "/etc/docker/config.json"
    assert Settings.from_env({"TUNGSTEN_RESULT_TTL_S": ""}).result_ttl_s == Settings().result_ttl_s


def test_only_from_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNGSTEN_RESULT_TTL_S", "5")
    assert Settings().result_ttl_s == 3600  # settings are built at an entry point, from what it passes
    assert Settings.from_env({}).result_ttl_s == 3600


def test_replace_checks_the_new_values_and_secrets_stay_out_of_repr() -> None:
    settings = Settings(webhook_secret="s3cret", registry_username="ci", registry_password="hunter2")
    assert "s3cret" not in repr(settings) and "hunter2" not in repr(settings)
    assert settings.replace(log_format="json", redis_url=None).log_format == "json"
    with pytest.raises(ConfigError, match="expected one of text, json"):
        settings.replace(log_format="xml")
