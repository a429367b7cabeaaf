"""After a burst of large request bodies, the API process gives the memory back: its
resident memory returns near where it was (measured from /proc)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import EXAMPLES, Server, ServerFactory, api_pid, memory_mib, wait_for
from tungstenkit._redis_server import RedisServer, free_port

BODY_MB = 16
BURST = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A Redis of its own: the accepted bodies (some 100 MB) go away with it.
    folder: Path = tmp_path_factory.mktemp("memory")
    redis_server = RedisServer(folder / "redis", port=free_port(), persistent=False)
    redis_server.start()
    factory = ServerFactory(folder, redis_server.url, folder / "home")
    try:
        yield factory(EXAMPLES / "noop", workers=0)
    finally:
        factory.stop_all()
        redis_server.stop()


def _post(server: Server, body: bytes) -> int:
    response = server.client.post(
        "/predictions", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    return response.status_code


def test_memory_goes_back_after_a_burst_of_large_bodies(server: Server) -> None:
    body = b'[{"text": "' + b"x" * (BODY_MB * 2**20) + b'"}]'
    pid = api_pid(server)
    before = memory_mib(pid)
    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        statuses = list(pool.map(lambda _: _post(server, body), range(BURST)))
    assert statuses == [200] * BURST
    assert memory_mib(pid, "VmHWM") - before > BURST * BODY_MB  # the burst did take memory
    # Everything was freed when the requests ended; what stays resident is the allocator's.
    wait_for(
        lambda: memory_mib(pid) - before < 2 * BODY_MB,
        10,
        what=f"the API to give back memory ({memory_mib(pid):.0f} MiB now, {before:.0f} MiB before)",
    )
