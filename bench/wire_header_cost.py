"""What the wire format's Lua header (``tungstenkit._queue._wire.lua_header``) costs Redis:
CPU microseconds per script call, for the header each script gets, against a bare script.

    python bench/wire_header_cost.py [--reps 9] [--calls 20000]

Every script builds the tables and functions of its header at each call (``local ENTRY =
{...}``); this measures that cost alone: ``EVALSHA`` of the header followed by ``return 1``,
alternated with a script that is only ``return 1``, reading ``usec_per_call`` from
``INFO commandstats`` (Redis's own CPU per call, which the load of other processes disturbs
less than a throughput would). Prints the median of each over the repetitions, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import redis

from tungstenkit._queue._scripts import script
from tungstenkit._queue._wire import lua_header
from tungstenkit._redis_server import RedisServer

#: The scripts of the hot path: a submit per event-loop turn, a start and a finish per batch,
#: an admit after a read that found nothing.
SCRIPTS = ("submit", "start", "finish", "admit")


def _usec_per_call(client: redis.Redis, sha: str, calls: int) -> float:
    client.config_resetstat()
    for _ in range(calls // 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(1000):
            pipe.evalsha(sha, 0)
        pipe.execute()
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="wire-bench-")), persistent=False)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        variants = {"bare": "return 1"}
        variants |= {name: lua_header(script(name).source) + "return 1" for name in SCRIPTS}
        shas = {name: client.script_load(source) for name, source in variants.items()}
        found: dict[str, list[float]] = {name: [] for name in variants}
        for rep in range(args.reps):
            order = list(variants) if rep % 2 else list(reversed(variants))
            for name in order:
                found[name].append(_usec_per_call(client, shas[name], args.calls))
        bare = statistics.median(found["bare"])
        result = {
            name: {
                "usec_per_call": round(statistics.median(values), 3),
                "header_usec": round(statistics.median(values) - bare, 3),
            }
            for name, values in found.items()
        }
        print(json.dumps(result, indent=2))
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
