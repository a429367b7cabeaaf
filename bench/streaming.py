"""Streaming events, measured on real processes (``tungsten serve`` with a bench-owned Redis).

``latency``: a streaming model (``bench/models/stream50``: 50 yields per batch of 32,
``--step-ms`` apart) serves 32 single-input predictions at once, each followed by its
own ``POST /predictions?stream=true`` stream; the added latency of an ``output`` event is
the time from the model's yield (stamped in the output) to the client parsing the event,
on one machine's clock. ``--rounds`` batches in a row.

``idle``: one API process holds ``--streams`` open event streams that carry nothing
(predictions waiting behind one that runs for an hour: pending; or that one, running
without events), and ``/health`` is timed with none open and with all of them open.

    .venv/bin/python bench/streaming.py latency --rounds 5
    .venv/bin/python bench/streaming.py idle --streams 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import ROOT, OurServer

MODEL = Path(__file__).resolve().parent / "models" / "stream50"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def follow(url: str, steps: int, step_ms: float, latencies: list[float], batches: list[int]) -> int:
    """One prediction submitted with ``?stream=true`` and followed to ``completed``, over a
    raw connection (an HTTP client library's own cost would count as the server's);
    returns its output events."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps([{"steps": steps, "step_ms": step_ms}]).encode()
    writer.write(
        b"POST /predictions?stream=true HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head[:300]
    outputs, kind, pending = 0, b"", b""
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)  # chunked transfer encoding
            if size == 0:
                return outputs
            pending += (await reader.readexactly(size + 2))[:-2]
            *lines, pending = pending.split(b"\n")
            received = time.time()
            for line in lines:
                if line.startswith(b"event: "):
                    kind = line[7:]
                elif line.startswith(b"data: ") and kind == b"output":
                    for item in json.loads(line[6:]):
                        latencies.append((received - item["output"]["at"]) * 1000)
                        batches.append(item["output"]["batch"])
                    outputs += 1
                elif line.startswith(b"data: ") and kind == b"completed":
                    return outputs
    finally:
        writer.close()


async def latency_rounds(url: str, rounds: int, clients: int, steps: int, step_ms: float) -> dict[str, object]:
    latencies: list[float] = []
    batches: list[int] = []
    events = 0
    began = time.perf_counter()
    for _ in range(rounds):
        counts = await asyncio.gather(*(follow(url, steps, step_ms, latencies, batches) for _ in range(clients)))
        events += sum(counts)
    elapsed = time.perf_counter() - began
    return {
        "rounds": rounds,
        "clients": clients,
        "steps": steps,
        "step_ms": step_ms,
        "output_events": events,
        "events_per_s": round(events / elapsed, 1),
        "mean_batch": round(statistics.mean(batches), 2) if batches else 0,
        "added_latency_ms": {
            "p50": round(percentile(latencies, 0.50), 2),
            "p90": round(percentile(latencies, 0.90), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies), 2),
        },
    }


async def time_health(url: str, count: int) -> dict[str, float]:
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(count):
            began = time.perf_counter()
            response = await client.get("/health")
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code in (200, 503), response.text
    return {"p50_ms": round(percentile(times, 0.5), 2), "p99_ms": round(percentile(times, 0.99), 2)}


async def open_stream(host: str, port: int, prediction_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection holding ``GET /predictions/{id}/events`` open (lighter than an HTTP client per stream)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /predictions/{prediction_id}/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return reader, writer


async def drain(reader: asyncio.StreamReader, received: list[int]) -> None:
    while chunk := await reader.read(65536):
        received[0] += len(chunk)


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle(
    url: str, streams: int, health_requests: int, hold_s: float, mode: str, pids: dict[str, int]
) -> dict[str, object]:
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        # One prediction runs for an hour without a word: the worker is busy with it.
        response = await client.post("/predictions", json=[{"steps": 1, "step_ms": 3_600_000}])
        blocker = response.json()["prediction_id"]
        if mode == "pending":
            ids = []
            for _ in range(streams):  # waiting behind it: their streams wait for a start
                response = await client.post("/predictions", json=[{"steps": 1, "step_ms": 1}])
                ids.append(response.json()["prediction_id"])
        else:
            ids = [blocker] * streams
    before = await time_health(url, health_requests)
    opened = []
    received = [0]
    for start in range(0, streams, 100):
        opened += await asyncio.gather(*(open_stream(host, int(port), p) for p in ids[start : start + 100]))
    readers = [asyncio.create_task(drain(reader, received)) for reader, _ in opened]
    await asyncio.sleep(1.0)  # past the first reads
    during = await time_health(url, health_requests)
    bytes_before_hold = received[0]
    cpu_before = {name: cpu_s(pids[name]) for name in ("api", "redis")}
    await asyncio.sleep(hold_s)
    held = received[0] - bytes_before_hold
    cpu = {name: round((cpu_s(pids[name]) - cpu_before[name]) / hold_s, 4) for name in cpu_before}
    for _, writer in opened:
        writer.close()
    for task in readers:
        task.cancel()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for prediction_id in set(ids) | {blocker}:
            await client.post(f"/predictions/{prediction_id}/cancel")
    return {
        "streams": streams,
        "mode": mode,
        "health_before": before,
        "health_with_streams": during,
        "bytes_received_while_idle": held,
        "idle_s": hold_s,
        "cpu_cores_while_idle": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "idle"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--health-requests", type=int, default=300)
    parser.add_argument("--hold-s", type=float, default=20.0)
    parser.add_argument("--mode", choices=["pending", "running"], default="pending")
    parser.add_argument("--out", type=Path, default=None, help="append the result as a JSON line here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tungsten-bench-streaming-"))
    if args.what == "latency":
        # The batch waits for its 32 inputs, so every round is one batch of 32 predictions.
        server = OurServer(MODEL, folder, env={"TUNGSTEN_BATCH_WAIT_MS": "200"}).start()
    else:
        server = OurServer(MODEL, folder).start()
    try:
        if args.what == "latency":
            result = asyncio.run(latency_rounds(server.url, args.rounds, args.clients, args.steps, args.step_ms))
        else:
            result = asyncio.run(
                idle(server.url, args.streams, args.health_requests, args.hold_s, args.mode, server.pids())
            )
    finally:
        server.stop()
    # The machine is shared: its load average says how much of it the run had.
    result = {
        "what": args.what,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "root": str(ROOT),
        "load_average_1m": round(os.getloadavg()[0], 2),
        **result,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        with args.out.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
