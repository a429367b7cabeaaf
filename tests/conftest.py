from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import browsersupport
from tests.filesupport import FileServer
from tests.filesupport import file_server as serve_files
from tests.support import MODELS, Server, ServerFactory
from tungstenkit._media import DEFAULT_MAX_IMAGE_PIXELS
from tungstenkit._redis_server import RedisServer, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free port, started by the launcher `tungsten serve` uses."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port(), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for faults that would disturb the others (out of
    memory, a replica, ACL changes, a paused or killed server)."""
    server = RedisServer(tmp_path_factory.mktemp("private-redis"), port=free_port(), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """A Redis key namespace of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tungsten_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TUNGSTEN_HOME", str(home))
    return home


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[ServerFactory]:
    """Starts `tungsten serve` subprocesses for one test; all are stopped after it."""
    factory = ServerFactory(tmp_path, redis_url, tmp_path / "home")
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_serve(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[ServerFactory]:
    """Like ``serve``, for servers shared by the tests of one module."""
    folder = tmp_path_factory.mktemp("servers")
    factory = ServerFactory(folder, redis_url, folder / "home")
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def recorder_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ``recorder_server``'s model writes the batches it runs (``audit_runs``)."""
    return tmp_path_factory.mktemp("audit") / "audit.log"


@pytest.fixture(scope="module")
def recorder_server(module_serve: ServerFactory, recorder_audit: Path) -> Server:
    """The recorder model served for the tests of one module, writing ``recorder_audit``."""
    return module_serve(MODELS / "recorder", env={"RECORDER_AUDIT": str(recorder_audit)})


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A loopback HTTP server that tests fill with files to fetch."""
    yield from serve_files()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium (Debian's), driven by Playwright; the test skips where it is absent."""
    yield from browsersupport.launch()


@pytest.fixture(autouse=True)
def _pillow_default_pixel_limit() -> Iterator[None]:
    """Each test starts with Pillow's own pixel guard.

    The guard is process-wide: an ``InputParser`` built with a small limit (as
    tests/app/test_inputs.py does at import, during collection) lowers it for every test
    that decodes a picture in this process afterwards.
    """
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
    yield
