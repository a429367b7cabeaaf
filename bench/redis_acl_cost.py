"""What the embedded Redis's ACL users cost Redis: CPU microseconds per command, as the
restricted ``api`` user vs the ``admin`` user (every right, so no key pattern to match).

    python bench/redis_acl_cost.py [--reps 7] [--calls 10000]

Starts an embedded-style Redis (``RedisServer`` with the users of ``tungstenkit._queue._acl``)
and, alternating the users, sends pipelines of ``HMGET`` (what ``GET /predictions/{id}``
sends) and ``EVALSHA`` of a script that calls four commands on three keys (as the submit
script does), then reads ``usec_per_call`` from ``INFO commandstats``: Redis's own CPU per
call, which the load of other processes disturbs less than a throughput would. Prints the
median of each over the repetitions, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import redis

from tungstenkit._queue import Keys, users
from tungstenkit._redis_server import RedisServer

SCRIPT = (
    "redis.call('HSET', KEYS[1], 'a', ARGV[1]) redis.call('INCRBY', KEYS[2], 1) "
    "redis.call('XADD', KEYS[3], 'MAXLEN', '1000', '*', 'p', ARGV[1]) return redis.call('HGET', KEYS[1], 'a')"
)
KEYS = ("tungsten:{bench}:pred:y", "tungsten:{bench}:queued", "tungsten:{bench}:queue")


def _measure(server: RedisServer, admin: redis.Redis, user: str, sha: str, calls: int) -> tuple[float, float]:
    client = redis.Redis.from_url(server.url_for(user))
    admin.config_resetstat()
    for _ in range(calls // 500):
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.hmget("tungsten:{bench}:pred:x", "result", "created")
            pipe.evalsha(sha, len(KEYS), *KEYS, i)
        pipe.execute()
    client.close()
    stats = admin.info("commandstats")
    return float(stats["cmdstat_hmget"]["usec_per_call"]), float(stats["cmdstat_evalsha"]["usec_per_call"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="acl-bench-")), persistent=False, users=users(Keys("bench")))
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.hset("tungsten:{bench}:pred:x", mapping={"result": "x" * 200, "created": "1"})
        sha = admin.script_load(SCRIPT)
        found: dict[str, list[tuple[float, float]]] = {"admin": [], "api": []}
        for _ in range(args.reps):
            for user, runs in found.items():
                runs.append(_measure(server, admin, user, sha, args.calls))
        admin.close()
    finally:
        server.stop()
    print(
        json.dumps(
            {
                user: {
                    "hmget_usec_per_call": statistics.median(r[0] for r in runs),
                    "evalsha_usec_per_call": statistics.median(r[1] for r in runs),
                }
                for user, runs in found.items()
            }
        )
    )


if __name__ == "__main__":
    main()
