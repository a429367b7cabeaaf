"""Redis Sentinel: how fast the service comes back when its primary dies, and what
``TUNGSTEN_REDIS_WAIT_REPLICAS`` costs.

Against a primary, two replicas and three Sentinels on loopback
(``tests/sentinel/replicas.py``; a primary silent for 1 s is down), in one run:

- **WAIT cost**: ``tungsten serve bench/models/noop`` with WAIT off and with
  ``TUNGSTEN_REDIS_WAIT_REPLICAS=1``, alternated ``--reps`` times; each time only
  ``POST /predictions`` (one input), a closed loop of 1 client (latency) and of
  ``--clients`` clients (throughput), ``--duration`` seconds after ``--warmup``. The
  same for the API's submit call alone (``AsyncPredictionQueue.submit`` in this
  process, no HTTP), where the Redis round trips are not drowned by the HTTP work;
- **recovery**: ``tungsten serve`` of the recorder test model under the fault suite's
  load, its primary killed with SIGKILL, ``--reps`` times with WAIT off and on (the
  killed node restarted as a replica in between): seconds from the kill until the
  Sentinels name a new primary, until a POST is accepted again, until a prediction
  accepted after the kill has succeeded; and how the accepted predictions ended.

Writes ``sentinel.json`` and ``sentinel.md`` to ``--out`` (``bench/results``).
``python bench/sentinel_failover.py --quick`` runs a few seconds of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from loadgen import percentile, request_loop

from tests.faults.load import Load
from tests.sentinel.recovery import kill_primary_and_time_recovery
from tests.sentinel.replicas import SentinelSet
from tests.support import MODELS, ServerFactory
from tungstenkit._queue import AsyncPredictionQueue, Keys, async_client, close_async, split_into_chunks

NOOP = BENCH / "models" / "noop"
MODES = {"off": {}, "wait1": {"TUNGSTEN_REDIS_WAIT_REPLICAS": "1"}}


async def _submit_loop(url: str, wait: bool, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """The API's submit call alone: ``concurrency`` tasks submitting one-input predictions."""
    client = async_client(url, max_connections=32, timeout_s=5)
    queue = AsyncPredictionQueue(
        client, Keys(f"micro-{uuid.uuid4().hex[:8]}"), result_ttl_s=60, max_queued_inputs=0, wait_replicas=int(wait)
    )
    chunks = split_into_chunks(['{"text": "r"}'], ["g"], 32)
    loop = asyncio.get_running_loop()
    begin = loop.time() + warmup_s
    end = begin + duration_s
    latencies: list[float] = []

    async def submitter() -> None:
        while loop.time() < end:
            started = time.perf_counter()
            await queue.submit(uuid.uuid4().hex, chunks, 1)
            if loop.time() >= begin:
                latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        await client.flushdb()
    finally:
        await close_async(client)
    latencies.sort()
    return {
        "concurrency": concurrency,
        "submits_per_s": round(len(latencies) / duration_s, 1),
        "latency_ms": {
            "p50": round(1000 * (percentile(latencies, 50) or 0), 3),
            "p99": round(1000 * (percentile(latencies, 99) or 0), 3),
        },
    }


def wait_cost(folder: Path, reps: int, clients: int, warmup_s: float, duration_s: float) -> list[dict[str, Any]]:
    sentinels = SentinelSet(folder / "redis-cost", replicas=2).start()
    runs = []
    try:
        factory = ServerFactory(folder / "cost", sentinels.url, folder / "home")
        (folder / "cost").mkdir(parents=True, exist_ok=True)
        for rep in range(reps):
            for mode, env in MODES.items():
                server = factory(NOOP, "--log-level", "warning", env=env, namespace=f"cost-{mode}-{rep}")
                try:
                    one = asyncio.run(request_loop(server.url, 1, warmup_s, duration_s))
                    many = asyncio.run(request_loop(server.url, clients, warmup_s, duration_s))
                finally:
                    server.stop()
                submit_one = asyncio.run(_submit_loop(sentinels.url, mode != "off", 1, warmup_s, duration_s))
                submit_many = asyncio.run(_submit_loop(sentinels.url, mode != "off", clients, warmup_s, duration_s))
                run = {
                    "rep": rep,
                    "mode": mode,
                    "one_client": one,
                    "many_clients": many,
                    "submit_one": submit_one,
                    "submit_many": submit_many,
                }
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        sentinels.stop()
    return runs


# -- recovery ------------------------------------------------------------------------
def recovery(folder: Path, reps: int) -> list[dict[str, Any]]:
    sentinels = SentinelSet(folder / "redis-failover", replicas=2).start()
    runs = []
    try:
        factory = ServerFactory(folder / "failover", sentinels.url, folder / "home")
        (folder / "failover").mkdir(parents=True, exist_ok=True)
        for rep in range(reps):
            for mode, env in MODES.items():
                audit = folder / f"audit-{mode}-{rep}.log"
                server = factory(
                    MODELS / "recorder",
                    "--log-level",
                    "warning",
                    env={**env, "RECORDER_AUDIT": str(audit), "TUNGSTEN_WEBHOOK_WORKERS": "0"},
                    namespace=f"failover-{mode}-{rep}",
                )
                load = Load(server.url, clients=4, hold=0.05, pace=0.2).start()
                try:
                    load.wait_accepted(20)
                    killed = sentinels.primary_port()
                    assert killed is not None
                    timed = kill_primary_and_time_recovery(sentinels, server.url)
                    load.wait_accepted(len(load.accepted) + 20, timeout=60)
                finally:
                    load.stop()
                report = load.settle(server, f"kill -9 the primary ({mode})", audit)
                server.stop()
                run = {"rep": rep, "mode": mode, **timed.as_dict(), "outcomes": report.as_dict()}
                print(json.dumps(run), flush=True)
                runs.append(run)
                # The killed node comes back empty and the Sentinels make it a replica.
                sentinels.restart(killed)
                sentinels.wait_settled(sentinels.primary_port())  # type: ignore[arg-type]
    finally:
        sentinels.stop()
    return runs


# -- report --------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def markdown(cost: list[dict[str, Any]], failovers: list[dict[str, Any]], clients: int) -> str:
    lines = ["# Redis Sentinel: WAIT cost and recovery after the primary is killed", ""]
    lines += [
        f"`POST /predictions` only (1 input, no-op model), medians of {len({r['rep'] for r in cost})} alternated runs:",
        "",
        "| | WAIT off | `TUNGSTEN_REDIS_WAIT_REPLICAS=1` | ratio |",
        "|---|---|---|---|",
    ]

    def figure(mode: str, load: str, *path: str) -> float:
        values = []
        for run in cost:
            if run["mode"] == mode:
                value: Any = run[load]
                for key in path:
                    value = value[key]
                values.append(float(value))
        return _median(values)

    for label, load, path in [
        ("1 client: POST p50 (ms)", "one_client", ("latency_ms", "p50")),
        ("1 client: POST p99 (ms)", "one_client", ("latency_ms", "p99")),
        (f"{clients} clients: POSTs/s", "many_clients", ("requests_per_s",)),
        (f"{clients} clients: POST p50 (ms)", "many_clients", ("latency_ms", "p50")),
        (f"{clients} clients: POST p99 (ms)", "many_clients", ("latency_ms", "p99")),
        ("submit call alone, 1 at a time: p50 (ms)", "submit_one", ("latency_ms", "p50")),
        ("submit call alone, 1 at a time: p99 (ms)", "submit_one", ("latency_ms", "p99")),
        (f"submit call alone, {clients} at a time: submits/s", "submit_many", ("submits_per_s",)),
        (f"submit call alone, {clients} at a time: p50 (ms)", "submit_many", ("latency_ms", "p50")),
    ]:
        off, on = figure("off", load, *path), figure("wait1", load, *path)
        lines.append(f"| {label} | {off:g} | {on:g} | {on / off:.2f} |" if off else f"| {label} | {off} | {on} | |")
    lines += [
        "",
        (
            "Recovery after `kill -9` of the primary under load (seconds from the kill; the Sentinels' "
            "`down-after-milliseconds` is 1000):"
        ),
        "",
        "| run | WAIT | failover | first POST accepted | first prediction completed | 503s meanwhile | accepted | completed | lost | ran twice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in failovers:
        out = run["outcomes"]
        lines.append(
            f"| {run['rep'] + 1} | {run['mode']} | {run['failover_s']:.2f} | {run['first_post_s']:.2f} | "
            f"{run['first_completed_s']:.2f} | {sum(run['refused'].values())} | {out['accepted']} | {out['completed']} | "
            f"{out['lost']} | {out['duplicated_inputs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="1 rep, 1 s runs")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 1.0, 0.2
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        folder = Path(tmp)
        cost = wait_cost(folder, args.reps, args.clients, args.warmup, args.duration)
        failovers = recovery(folder, args.reps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentinel.json").write_text(json.dumps({"wait_cost": cost, "recovery": failovers}, indent=1) + "\n")
    (args.out / "sentinel.md").write_text(markdown(cost, failovers, args.clients))
    print(markdown(cost, failovers, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
