"""What one Redis call costs the API's process: CPU microseconds per command, by client setup.

    python bench/micro_redis.py [--n 5000] [--concurrency 32] [--reps 3]

Starts a bench-owned redis-server listening on both loopback TCP and a unix socket, and
times ``HMGET`` of a prediction-like hash from the asyncio client the API uses
(``redis.asyncio``, hiredis parser, uvloop), varying one thing at a time:

- transport: loopback TCP vs unix socket;
- ``socket_timeout`` set (the API sets 5 s) vs not: with it, redis-py wraps every send in
  ``asyncio.wait_for``, which creates a task per command;
- one command per round trip vs the same commands sent as one pipeline
  (``pipeline(transaction=False)``), as concurrent requests could share one.

Reports process CPU time per command (``time.process_time``), which is what limits a
single-process API; the Redis server's own CPU is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import free_port, wait_until

FIELDS = ("status", "created", "started", "completed", "outputs", "error")


async def measure(url: str, n: int, concurrency: int, socket_timeout: float | None, pipelined: bool) -> float:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=socket_timeout, max_connections=concurrency + 4)
    key = "tungsten:{bench}:pred:0123456789abcdef0123456789abcdef"
    await client.hset(
        key,
        mapping={
            "status": "success",
            "created": "2026-01-01T00:00:00.000000Z",
            "outputs": json.dumps([{"text": "x", "batch": 32}]),
        },
    )
    per_worker = n // concurrency

    async def one_by_one() -> None:
        for _ in range(per_worker):
            await client.hmget(key, FIELDS)

    async def as_pipelines() -> None:
        # The same number of commands, ``concurrency`` per round trip.
        for _ in range(per_worker):
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(concurrency):
                    pipe.hmget(key, FIELDS)
                await pipe.execute()

    await (one_by_one() if not pipelined else as_pipelines())  # warm the pool
    start = time.process_time()
    if pipelined:
        await as_pipelines()
        done = per_worker * concurrency
    else:
        await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
        done = per_worker * concurrency
    cpu = time.process_time() - start
    await client.aclose()
    return cpu / done * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    sock = folder / "redis.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(sock.exists, 10, "redis-server")
        urls = {"tcp": f"redis://127.0.0.1:{port}/0", "unix": f"unix://{sock}?db=0"}
        # Variants interleaved, ``--reps`` rounds, median reported: the machine is noisy.
        results: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.reps):
            for transport, url in urls.items():
                for timeout in (5.0, None):
                    for pipelined in (False, True):
                        us = asyncio.run(measure(url, args.n, args.concurrency, timeout, pipelined))
                        key = (transport, "5 s" if timeout else "none", "pipeline" if pipelined else "one per call")
                        results.setdefault(key, []).append(us)
        print("| transport | socket_timeout | round trips | API-process CPU us per HMGET (median; all) |")
        print("|---|---|---|---|")
        for (transport, timeout, mode), values in results.items():
            print(
                f"| {transport} | {timeout} | {mode} | {statistics.median(values):.1f} ({', '.join(f'{v:.0f}' for v in values)}) |"
            )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
