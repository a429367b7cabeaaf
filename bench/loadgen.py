"""A load generator for the prediction API: stdlib asyncio, raw HTTP/1.1 with keep-alive.

It measures the server, not itself: an HTTP client library such as httpx costs about
2 ms of CPU per request on this kind of machine, which is more than the server under
test spends. Here one request is one ``write`` and one ``readuntil`` + ``readexactly``.

Each prediction is a ``POST /predictions`` followed by reads of its result until it ends:

- ``longpoll`` (this server): ``GET /predictions/{id}?wait=S``, repeated only if the wait
  ran out first. Normally two HTTP requests per prediction.
- ``poll`` (Tungstenkit, which has no long-poll): ``GET /predictions/{id}`` every
  ``poll_ms`` after the POST answered, until the status is terminal. See ``BENCHMARKS.md``
  for how the interval is chosen fairly.

Two ways of loading:

- closed loop: ``clients`` concurrent clients, each with its own keep-alive connection,
  each starting its next prediction when the last one ended;
- open loop: predictions arrive as a Poisson process at ``rate`` per second whatever the
  server does (latency counted from the scheduled arrival, so a slow server is not
  excused by the load generator falling behind), over a pool of keep-alive connections.

Only predictions that *end* inside the measurement window (after ``warmup_s``, for
``duration_s``) count. At the window's edges the load generator snapshots the CPU time
of the named server processes (``/proc``), the whole machine's CPU, and Redis'
``INFO commandstats`` when a Redis address is given.

Run ``python bench/loadgen.py --help``; ``bench/run.py`` drives it as a subprocess and
reads the JSON it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TERMINAL = (b'"status":"success"', b'"status":"failed"')
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The input object sent by default; ``%i`` becomes a number that differs per input.
DEFAULT_INPUT = '{"text": "r%i"}'


# ---------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams


class HTTPError(Exception):
    pass


#: uvicorn closes a keep-alive connection idle for 5 s; a connection idle this long is
#: replaced before use rather than risk a request racing the server's close.
IDLE_REUSE_S = 3.0


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._host_header = f"{host}:{port}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)

    async def request(self, method: bytes, path: bytes, body: bytes = b"", headers: bytes = b"") -> tuple[int, bytes]:
        """``headers``: more header lines, each ending in CRLF."""
        now = time.monotonic()
        if self._writer is not None and now - self._last_used > IDLE_REUSE_S:
            await self.close()
        self._last_used = now
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self._host_header) + headers
        if body or method == b"POST":
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._writer.write(head + b"\r\n" + body)
        try:
            header_block = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise HTTPError(f"connection closed by server during {method.decode()} {path.decode()}") from None
        status = int(header_block[9:12])
        length = -1
        chunked = False
        close = False
        for line in header_block.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self._reader.readuntil(b"\r\n")
                    break
                parts.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            payload = b"".join(parts)
        elif length >= 0:
            payload = await self._reader.readexactly(length)
        else:
            payload = await self._reader.read()
            close = True
        self._last_used = time.monotonic()
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self._reader = self._writer = None


# ---------------------------------------------------------------------------------
# Requests alone: a closed loop of one request each (no prediction followed to its end)


async def request_loop(
    url: str,
    clients: int,
    warmup_s: float,
    duration_s: float,
    *,
    method: bytes = b"POST",
    path: bytes = b"/predictions",
    headers: bytes = b"",
) -> dict[str, Any]:
    """``clients`` connections sending ``method path`` back to back (a POST carries a
    one-input prediction of the noop model); latency and rate of the answers within the
    window after ``warmup_s``."""
    host, port = url.removeprefix("http://").split(":")
    begin = time.perf_counter() + warmup_s
    end = begin + duration_s
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(10**9))

    async def client() -> None:
        connection = Connection(host, int(port))
        try:
            while True:
                body = b'[{"text": "r%d"}]' % next(counter) if method == b"POST" else b""
                started = time.perf_counter()
                if started >= end:
                    return
                status, _ = await connection.request(method, path, body, headers)
                ended = time.perf_counter()
                if started >= begin and ended <= end:
                    latencies.append(ended - started)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(statuses.get(200, 0) / duration_s, 1),
        "statuses": statuses,
        "latency_ms": {
            "p50": round(1000 * (percentile(latencies, 50) or 0), 3),
            "p99": round(1000 * (percentile(latencies, 99) or 0), 3),
            "mean": round(1000 * statistics.fmean(latencies), 3) if latencies else None,
        },
    }


# ---------------------------------------------------------------------------------
# One prediction


@dataclass
class Outcome:
    started: float  # when the prediction was due (closed loop: when its POST was sent)
    ended: float
    status: str
    http_requests: int
    batches: list[tuple[int, str, float]] = field(default_factory=list)  # (size, id, start) per input
    error: str = ""

    @property
    def latency(self) -> float:
        return self.ended - self.started


def _prediction_id(body: bytes) -> bytes:
    marker = body.index(b'"prediction_id":"') + 17
    return body[marker : body.index(b'"', marker)]


def _status(body: bytes) -> str:
    marker = body.find(b'"status":"')
    if marker < 0:
        return "?"
    marker += 10
    return body[marker : body.index(b'"', marker)].decode()


def _batches(body: bytes) -> list[tuple[int, str, float]]:
    """(batch size, batch id, batch start) of each output, when the model reports them."""
    if b'"batch"' not in body:
        return []
    outputs = json.loads(body).get("outputs") or []
    return [
        (int(o["batch"]), str(o.get("batch_id", "")), float(o.get("batch_started", 0.0)))
        for o in outputs
        if isinstance(o, dict) and "batch" in o
    ]


def batch_intervals_ms(starts: dict[str, float]) -> list[float]:
    """Time between the starts of consecutive batches of one worker process, in ms.

    Batch ids are ``<pid>-<counter>``; only pairs whose both batches were seen count.
    With a model of fixed cost, interval minus that cost is the model's idle gap.
    """
    by_pid: dict[str, dict[int, float]] = {}
    for batch_id, started in starts.items():
        pid, _, counter = batch_id.rpartition("-")
        if pid and counter.isdigit() and started:
            by_pid.setdefault(pid, {})[int(counter)] = started
    intervals = []
    for seen in by_pid.values():
        for counter, started in seen.items():
            following = seen.get(counter + 1)
            if following is not None:
                intervals.append((following - started) * 1000)
    return sorted(intervals)


@dataclass
class Mode:
    mode: str  # "longpoll" or "poll"
    wait_s: float = 30.0
    poll_ms: float = 5.0
    timeout_s: float = 60.0


async def predict(conn: Connection, body: bytes, mode: Mode, started: float) -> Outcome:
    requests = 1
    try:
        status, reply = await conn.request(b"POST", b"/predictions", body)
        if status != 200:
            return Outcome(
                started, time.monotonic(), f"http{status}", requests, error=reply[:200].decode(errors="replace")
            )
        path = b"/predictions/" + _prediction_id(reply)
        deadline = started + mode.timeout_s
        if mode.mode == "longpoll":
            path += b"?wait=%g" % mode.wait_s
            while True:
                status, reply = await conn.request(b"GET", path)
                requests += 1
                if status != 200 or any(t in reply for t in TERMINAL) or time.monotonic() > deadline:
                    break
        else:
            interval = mode.poll_ms / 1000
            while True:
                await asyncio.sleep(interval)
                status, reply = await conn.request(b"GET", path)
                requests += 1
                if status != 200 or any(t in reply for t in TERMINAL) or time.monotonic() > deadline:
                    break
        ended = time.monotonic()
        if status != 200:
            return Outcome(started, ended, f"http{status}", requests, error=reply[:200].decode(errors="replace"))
        state = _status(reply)
        if state not in ("success", "failed"):
            state = "timeout"
        return Outcome(started, ended, state, requests, _batches(reply) if state == "success" else [])
    except (HTTPError, OSError, ValueError) as exc:
        return Outcome(started, time.monotonic(), "error", requests, error=f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------
# Snapshots at the window's edges


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (threads included), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


async def redis_command(address: str, *args: str) -> bytes:
    """One command over RESP to ``host:port`` (no auth: the bench's own Redis)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
        writer.write(request)
        first = await reader.readuntil(b"\r\n")
        if first.startswith(b"$"):
            return (await reader.readexactly(int(first[1:-2]) + 2))[:-2]
        return first[1:-2]
    finally:
        writer.close()


def parse_commandstats(text: bytes) -> dict[str, int]:
    stats = {}
    for line in text.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[8:].partition(":")
            for part in rest.split(","):
                key, _, value = part.partition("=")
                if key == "calls":
                    stats[name] = int(value)
    return stats


@dataclass
class Snapshot:
    at: float
    procs: dict[str, float | None]
    machine: tuple[float, float]
    commands: dict[str, int]
    rusage_self: float


async def snapshot(pids: dict[str, int], redis_address: str | None) -> Snapshot:
    commands = parse_commandstats(await redis_command(redis_address, "INFO", "commandstats")) if redis_address else {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Snapshot(
        time.monotonic(),
        {name: proc_cpu_s(pid) for name, pid in pids.items()},
        machine_cpu(),
        commands,
        usage.ru_utime + usage.ru_stime,
    )


# ---------------------------------------------------------------------------------
# Closed and open loops


@dataclass
class Load:
    url: str
    inputs_per_request: int
    mode: Mode
    duration_s: float
    warmup_s: float
    clients: int = 0  # closed loop
    rate: float = 0.0  # open loop: predictions per second
    seed: int = 1
    input_template: str = DEFAULT_INPUT
    max_connections: int = 512  # open loop: predictions in flight at most


def request_body(template: str, n: int, counter: int) -> bytes:
    return ("[" + ",".join(template.replace("%i", str(counter * 1000 + i)) for i in range(n)) + "]").encode()


async def _closed_loop(load: Load, targets: list[tuple[str, int]], stop_at: float, outcomes: list[Outcome]) -> None:
    bodies = [request_body(load.input_template, load.inputs_per_request, i) for i in range(16)]

    async def client(index: int) -> None:
        conn = Connection(*targets[index % len(targets)])
        count = 0
        try:
            while time.monotonic() < stop_at:
                body = bodies[(index + count) % len(bodies)]
                count += 1
                outcomes.append(await predict(conn, body, load.mode, time.monotonic()))
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(load.clients)))


async def _open_loop(load: Load, targets: list[tuple[str, int]], stop_at: float, outcomes: list[Outcome]) -> None:
    host, port = targets[0]
    rng = random.Random(load.seed)
    idle: list[Connection] = []
    tasks: set[asyncio.Task[None]] = set()
    bodies = [request_body(load.input_template, load.inputs_per_request, i) for i in range(16)]
    # Beyond this many predictions in flight, arrivals wait for a connection; their
    # latency still counts from when they were due.
    slots = asyncio.Semaphore(load.max_connections)

    async def one(due: float, body: bytes) -> None:
        async with slots:
            conn = idle.pop() if idle else Connection(host, port)
            outcome = await predict(conn, body, load.mode, due)
            outcomes.append(outcome)
            if outcome.status == "error":
                await conn.close()
            idle.append(conn)

    due = time.monotonic()
    count = 0
    while due < stop_at:
        due += rng.expovariate(load.rate)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, bodies[count % len(bodies)]))
        count += 1
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=load.mode.timeout_s)
    for conn in idle:
        await conn.close()


async def run_load(load: Load, pids: dict[str, int], redis_address: str | None) -> dict[str, Any]:
    targets = []
    for url in load.url.split(","):
        parts = urlsplit(url)
        targets.append((parts.hostname or "127.0.0.1", parts.port or 80))
    outcomes: list[Outcome] = []
    t0 = time.monotonic()
    window_start = t0 + load.warmup_s
    window_end = window_start + load.duration_s
    edges: list[Snapshot] = []

    async def take_snapshots() -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        edges.append(await snapshot(pids, redis_address))
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        edges.append(await snapshot(pids, redis_address))

    snapper = asyncio.create_task(take_snapshots())
    if load.clients:
        await _closed_loop(load, targets, window_end, outcomes)
    else:
        await _open_loop(load, targets, window_end, outcomes)
    await snapper
    return summarize(load, outcomes, edges[0], edges[1], pids)


# ---------------------------------------------------------------------------------
# Figures


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(
    load: Load, outcomes: list[Outcome], first: Snapshot, last: Snapshot, pids: dict[str, int]
) -> dict[str, Any]:
    window = last.at - first.at
    if load.rate:
        # Open loop: a prediction belongs to the window by its arrival, so that a server
        # that falls behind shows as latency, not as a shorter list.
        inside = [o for o in outcomes if first.at <= o.started < last.at]
    else:
        inside = [o for o in outcomes if first.at <= o.ended < last.at]
    ok = [o for o in inside if o.status == "success"]
    latencies = sorted(o.latency * 1000 for o in ok)
    statuses: dict[str, int] = {}
    for o in inside:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    inputs = len(ok) * load.inputs_per_request
    # Batch figures: exact from the batch ids the bench models report.
    batch_sizes: dict[str, int] = {}
    batch_starts: dict[str, float] = {}
    for o in ok:
        for size, batch_id, started in o.batches:
            batch_sizes[batch_id] = size
            batch_starts[batch_id] = started
    intervals = batch_intervals_ms(batch_starts)
    histogram: dict[int, int] = {}
    for size in batch_sizes.values():
        histogram[size] = histogram.get(size, 0) + 1
    reported_inputs = sum(len(o.batches) for o in ok)
    per_input_mean = sum(b[0] for o in ok for b in o.batches) / reported_inputs if reported_inputs else None
    cpu = {}
    for name in pids:
        a, b = first.procs.get(name), last.procs.get(name)
        cpu[name] = None if a is None or b is None else round(b - a, 3)
    busy = last.machine[0] - first.machine[0]
    total = last.machine[1] - first.machine[1]
    commands = {k: last.commands.get(k, 0) - first.commands.get(k, 0) for k in last.commands}
    commands = {k: v for k, v in commands.items() if v and k != "info"}
    total_commands = sum(commands.values())
    http_requests = sum(o.http_requests for o in inside)
    return {
        "load": {
            "url": load.url,
            "mode": load.mode.mode,
            "poll_ms": load.mode.poll_ms if load.mode.mode == "poll" else None,
            "clients": load.clients or None,
            "rate": load.rate or None,
            "inputs_per_request": load.inputs_per_request,
            "duration_s": load.duration_s,
            "warmup_s": load.warmup_s,
        },
        "window_s": round(window, 3),
        "predictions": len(ok),
        "statuses": statuses,
        "inputs": inputs,
        "inputs_per_s": round(inputs / window, 1),
        "requests_per_s": round(len(ok) / window, 1),
        "http_requests_per_s": round(http_requests / window, 1),
        "http_per_prediction": round(http_requests / len(inside), 3) if inside else None,
        "latency_ms": {
            "p50": _r(percentile(latencies, 50)),
            "p90": _r(percentile(latencies, 90)),
            "p99": _r(percentile(latencies, 99)),
            "mean": _r(sum(latencies) / len(latencies)) if latencies else None,
            "max": _r(latencies[-1]) if latencies else None,
        },
        "batches": {
            "count": len(batch_sizes),
            "mean": round(sum(batch_sizes.values()) / len(batch_sizes), 2) if batch_sizes else None,
            "mean_seen_by_input": round(per_input_mean, 2) if per_input_mean else None,
            "histogram": dict(sorted(histogram.items())),
            # Start-to-start time of consecutive batches of one worker (fixed-cost models:
            # minus the model's cost, this is the time the model waited between batches).
            "interval_ms": {
                "count": len(intervals),
                "p50": _r(percentile(intervals, 50)),
                "p90": _r(percentile(intervals, 90)),
                "mean": _r(sum(intervals) / len(intervals)) if intervals else None,
            },
        },
        "cpu_s": cpu,
        "cpu_s_server_total": round(sum(v for v in cpu.values() if v), 3),
        "cpu_s_loadgen": round(last.rusage_self - first.rusage_self, 3),
        "machine_busy_cores": round(busy / window, 2) if window else None,
        "machine_cores": round(total / window, 2) if window else None,
        "redis_commands": dict(sorted(commands.items(), key=lambda kv: -kv[1])),
        "redis_commands_per_input": round(total_commands / inputs, 2) if inputs and commands else None,
        "errors": sorted({o.error for o in inside if o.error})[:5],
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        required=True,
        help="base URL of the server, e.g. http://127.0.0.1:3000; "
        "several, comma-separated, share the closed-loop clients round-robin",
    )
    parser.add_argument("--mode", choices=["longpoll", "poll"], default="longpoll")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="poll interval (mode poll)")
    parser.add_argument("--wait", type=float, default=30.0, help="?wait= seconds (mode longpoll)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--clients", type=int, help="closed loop with this many clients")
    group.add_argument("--rate", type=float, help="open loop: predictions per second (Poisson)")
    parser.add_argument("--inputs", type=int, default=1, help="inputs per request")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window opens")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a prediction after this")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID", help="a process to measure CPU of")
    parser.add_argument("--redis", help="host:port of a password-less Redis to read INFO commandstats from")
    parser.add_argument("--input", default=DEFAULT_INPUT, help="input object as JSON; %%i becomes a number")
    parser.add_argument("--max-connections", type=int, default=512, help="open loop: predictions in flight at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the result here (else stdout)")
    args = parser.parse_args(argv)
    pids = {name: int(pid) for name, _, pid in (p.partition("=") for p in args.pid)}
    load = Load(
        url=args.url,
        inputs_per_request=args.inputs,
        mode=Mode(args.mode, wait_s=args.wait, poll_ms=args.poll_ms, timeout_s=args.timeout),
        duration_s=args.duration,
        warmup_s=args.warmup,
        clients=args.clients or 0,
        rate=args.rate or 0.0,
        seed=args.seed,
        input_template=args.input,
        max_connections=args.max_connections,
    )
    result = asyncio.run(run_load(load, pids, args.redis))
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
