"""The Redis URL forms: Sentinel URLs parsed, passwords kept out of messages, Cluster declined."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import tungsten
from tungstenkit._errors import ConfigError
from tungstenkit._queue import SentinelAddress, check_url, redacted
from tungstenkit._queue._connections import DEFAULT_SENTINEL_PORT, tls_options
from tungstenkit._settings import RedisTLS


def test_the_full_form() -> None:
    address = SentinelAddress.parse(
        "redis+sentinel://user:p%40ss@10.0.0.1:26380,sentinel-2,[fd00::3]:5000/my-model/3"
        "?sentinel_username=watch&sentinel_password=s3cret"
    )
    assert address.sentinels == (("10.0.0.1", 26380), ("sentinel-2", DEFAULT_SENTINEL_PORT), ("fd00::3", 5000))
    assert address.service == "my-model"
    assert address.db == 3
    assert (address.username, address.password) == ("user", "p@ss")
    assert (address.sentinel_username, address.sentinel_password) == ("watch", "s3cret")
    assert address.primary_kwargs() == {"db": 3, "username": "user", "password": "p@ss"}
    assert address.sentinel_kwargs()["password"] == "s3cret"


def test_the_short_forms() -> None:
    plain = SentinelAddress.parse("redis+sentinel://localhost/mymaster")
    assert plain.sentinels == (("localhost", 26379),)
    assert (plain.service, plain.db, plain.username, plain.password) == ("mymaster", 0, None, None)
    assert "password" not in plain.sentinel_kwargs()
    assert SentinelAddress.parse("redis+sentinel://:pw@h:1/s/").password == "pw"
    assert SentinelAddress.parse("REDIS+SENTINEL://pw@h:1/s").password == "pw"  # as redis-py reads redis://pw@host


def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_the_primary(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    files = tls_options("rediss+sentinel://h/s", RedisTLS(ca_file=ca))
    address = SentinelAddress.parse("rediss+sentinel://:pw@h/s")
    assert address.tls and not SentinelAddress.parse("redis+sentinel://h/s").tls
    assert address.sentinel_kwargs(files)["ssl"] is True and address.sentinel_kwargs(files)["ssl_ca_certs"] == str(ca)
    assert address.primary_kwargs(files) == {
        "db": 0,
        "username": None,
        "password": "pw",
        "ssl": True,
        "ssl_ca_certs": str(ca),
    }
    with pytest.raises(ConfigError, match="is not rediss:// or rediss\\+sentinel://"):
        tls_options("redis+sentinel://h/s", RedisTLS(ca_file=ca))


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h:1", r"expected redis\+sentinel://host:port"),
        ("redis+sentinel://h:1/", r"expected redis\+sentinel://host:port"),
        ("redis+sentinel://h:1/s/0/extra", r"expected redis\+sentinel://host:port"),
        ("redis+sentinel://h:1/s/zero", "the database must be a number"),
        ("redis+sentinel://h:99999/s", "bad port"),
        ("redis+sentinel://h:x/s", "bad port"),
        ("redis+sentinel://h:1,/s", "empty"),
        ("redis+sentinel://[::1/s", "bad address"),
        ("redis+sentinel://h/s?password=x", "unknown option 'password'"),
    ],
)
def test_mistakes_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        check_url(url)


def test_cluster_is_declined_with_the_reason() -> None:
    with pytest.raises(
        ConfigError, match=r"Redis Cluster .* not supported: every key of a model lives in one hash slot"
    ):
        check_url("redis+cluster://h:7000")


@pytest.mark.parametrize(
    "url",
    ["redis://h", "rediss://h:6380/1", "unix:///tmp/r.sock?db=0", "redis+sentinel://h/s", "rediss+sentinel://h/s"],
)
def test_the_accepted_schemes(url: str) -> None:
    check_url(url)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(
        ConfigError, match="expected redis://, rediss://, unix://, redis\\+sentinel:// or rediss\\+sentinel://"
    ):
        check_url("http://h:6379")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("redis://user:pw@h", "redis://***@h"),
        ("unix://:p%2Fw@/tmp/redis.sock?db=0", "unix://***@/tmp/redis.sock?db=0"),
        (
            "redis+sentinel://:pw@a:1,b:2/svc/1?sentinel_password=spw&sentinel_username=u",
            "redis+sentinel://***@a:1,b:2/svc/1?sentinel_password=***&sentinel_username=u",
        ),
        ("redis://h:6379", "redis://h:6379"),
    ],
)
def test_passwords_never_reach_messages(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_the_cli_says_error_for_a_bad_url() -> None:
    result = tungsten("status", "--redis-url", "redis+sentinel://127.0.0.1:1/svc/x", timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Redis Sentinel URL redis+sentinel://127.0.0.1:1/svc/x: the database must be a number, not 'x'"
    ]
