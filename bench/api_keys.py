"""What API keys cost the API: ``tungsten serve bench/models/noop`` with keys off, on,
and on with a key whose limits are checked (a request rate and a queued-inputs bound
too high to refuse anything: the Lua checks run, nothing is refused).

Each mode on a fresh server (its own namespace of one private Redis), alternated
``--reps`` times: ``POST /predictions`` (one input) from 1 client (latency) and from
``--clients`` clients (throughput), and ``GET /predictions/{id}`` of one prediction the
key created (the read and its ownership check), ``--duration`` seconds after
``--warmup`` each. Besides rates and latencies, the CPU time the API process and Redis
spent per request answered: on a machine shared with other work, the rates move with
the neighbours' load, the CPU per request much less.

Writes ``api_keys.json`` and ``api_keys.md`` to ``--out`` (``bench/results``);
``--quick`` runs a second of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from loadgen import proc_cpu_s, request_loop

from tests.support import ServerFactory, api_pid
from tungstenkit._queue import Keys, KeyStore
from tungstenkit._redis_server import RedisServer, free_port

NOOP = BENCH / "models" / "noop"
#: Mode: (server environment, the limits of its key; None: no key sent).
MODES: dict[str, tuple[dict[str, str], dict[str, float] | None]] = {
    "off": ({}, None),
    "on": ({"TUNGSTEN_API_KEYS": "on"}, {}),
    "on+limits": ({"TUNGSTEN_API_KEYS": "on"}, {"rps": 1e6, "max_queued": 10**9}),
}
LOADS = ("post_1", "post_many", "get_many")


def _measured(
    url: str, pids: dict[str, int], clients: int, warmup_s: float, duration_s: float, **request: Any
) -> dict[str, Any]:
    """``request_loop``, with the CPU milliseconds per request of each process in ``pids``
    (over the whole loop, warm-up included, per request sent)."""
    before = {name: proc_cpu_s(pid) or 0.0 for name, pid in pids.items()}
    result = asyncio.run(request_loop(url, clients, warmup_s, duration_s, **request))
    sent = result["requests"] * (warmup_s + duration_s) / duration_s  # the warm-up's requests, estimated
    for name, pid in pids.items():
        result[f"{name}_cpu_ms_per_request"] = round(1000 * ((proc_cpu_s(pid) or 0.0) - before[name]) / max(sent, 1), 4)
    return result


def one_run(
    factory: ServerFactory,
    redis_url: str,
    redis_pid: int,
    mode: str,
    rep: int,
    clients: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    env, limits = MODES[mode]
    namespace = f"keys-{mode.replace('+', '-')}-{rep}"
    auth: dict[str, str] = {}
    if limits is not None:
        with redis.Redis.from_url(redis_url) as client:
            _, token = KeyStore(client, Keys(namespace)).create(
                "bench", "predict", rps=limits.get("rps", 0), max_queued=int(limits.get("max_queued", 0))
            )
        auth = {"Authorization": f"Bearer {token}"}
    headers = b"".join(f"{name}: {value}\r\n".encode() for name, value in auth.items())
    server = factory(NOOP, "--log-level", "warning", env=env, namespace=namespace)
    try:
        created = server.client.post("/predictions", json=[{"text": "x"}], headers=auth)
        path = b"/predictions/" + created.json()["prediction_id"].encode()
        pids = {"api": api_pid(server), "redis": redis_pid}
        run = {
            "rep": rep,
            "mode": mode,
            "post_1": _measured(server.url, pids, 1, warmup_s, duration_s, headers=headers),
            "post_many": _measured(server.url, pids, clients, warmup_s, duration_s, headers=headers),
            "get_many": _measured(
                server.url, pids, clients, warmup_s, duration_s, method=b"GET", path=path, headers=headers
            ),
        }
    finally:
        server.stop()
    print(json.dumps(run), flush=True)
    return run


def _median(runs: list[dict[str, Any]], mode: str, load: str, *fields: str) -> float:
    values = []
    for run in runs:
        if run["mode"] == mode:
            value: Any = run[load]
            for name in fields:
                value = value[name]
            values.append(value)
    return round(statistics.median(values), 3)


def markdown(runs: list[dict[str, Any]], clients: int) -> str:
    rows = [
        ("`POST`, 1 client: p50 latency (ms)", "post_1", ("latency_ms", "p50")),
        (f"`POST`, {clients} clients: per second", "post_many", ("requests_per_s",)),
        (f"`GET` of one prediction, {clients} clients: per second", "get_many", ("requests_per_s",)),
        (f"`POST`, {clients} clients: API CPU ms per request", "post_many", ("api_cpu_ms_per_request",)),
        (f"`POST`, {clients} clients: Redis CPU ms per request", "post_many", ("redis_cpu_ms_per_request",)),
        (f"`GET`, {clients} clients: API CPU ms per request", "get_many", ("api_cpu_ms_per_request",)),
        (f"`GET`, {clients} clients: Redis CPU ms per request", "get_many", ("redis_cpu_ms_per_request",)),
    ]
    lines = [
        "| medians of the runs | keys off | keys on | on, with limits | on / off | limits / off |",
        "|---|---|---|---|---|---|",
    ]
    for label, load, fields in rows:
        off, on, limited = (_median(runs, mode, load, *fields) for mode in MODES)
        ratios = [f"{value / off:.2f}" if off else "-" for value in (on, limited)]
        lines.append(f"| {label} | {off} | {on} | {limited} | {' | '.join(ratios)} |")
    refused = sum(
        count
        for run in runs
        for load in LOADS
        for status, count in run[load]["statuses"].items()
        if str(status) != "200"
    )
    lines.append("")
    lines.append(f"Requests answered other than 200 in all runs: {refused}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1 rep, 1 s runs")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 1.0, 0.2
    runs = []
    with tempfile.TemporaryDirectory(prefix="api-keys-bench-") as tmp:
        folder = Path(tmp)
        redis_server = RedisServer(folder / "redis", port=free_port(), persistent=False)
        redis_server.start()
        try:
            factory = ServerFactory(folder, redis_server.url, folder / "home")
            for rep in range(args.reps):
                for mode in MODES:
                    runs.append(
                        one_run(
                            factory,
                            redis_server.url,
                            redis_server.pid,
                            mode,
                            rep,
                            args.clients,
                            args.warmup,
                            args.duration,
                        )
                    )
        finally:
            redis_server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api_keys.json").write_text(json.dumps(runs, indent=1) + "\n")
    (args.out / "api_keys.md").write_text(markdown(runs, args.clients))
    print(markdown(runs, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
