"""Latency on the Redis link: two worker hosts still serve about twice what one does.

A fixed-cost model (the recorder holding 0.2 s per batch of up to 32) is kept busy by
clients; the inputs per second it completes are measured with one worker host and with
two, with the Redis host's link at its own speed and with 10 ms added each way (20 ms per
round trip). Every round trip a batch costs (read, start, results) is paid once per batch,
and the worker overlaps them with the model (reading ahead, writing behind), so latency
costs next to nothing; the test asserts the two-host ratio under latency, that latency
cost at most a tenth of the throughput, and that batches stayed full.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from tests.cluster.hosts import REDIS_PORT, Api, Cluster
from tests.cluster.netns import Network
from tests.support import MODELS, record_figures

RECORDER = MODELS / "recorder"
BATCH = 32
HOLD_S = 0.2
#: Each way: a 20 ms round trip, as `tc qdisc add ... netem delay 10ms` on both ends gives.
ONE_WAY_MS = 10.0
#: Seconds of load measured per phase, after a warm-up.
PHASE_S = 4.0
WARMUP_S = 1.0
#: Clients per worker, each with one request of BATCH inputs at a time: the queue always
#: holds work for every worker.
CLIENTS_PER_WORKER = 4

_inputs = itertools.count()


@dataclass
class Phase:
    workers: int
    one_way_ms: float
    inputs: int
    seconds: float
    inputs_per_s: float
    mean_batch: float

    @property
    def of_ideal(self) -> float:
        return self.inputs_per_s / (self.workers * BATCH / HOLD_S)


def _measure(api: Api, workers: int, one_way_ms: float) -> Phase:
    """Closed-loop load: CLIENTS_PER_WORKER clients per worker, each submitting BATCH
    inputs and waiting for them to end, again and again, for WARMUP_S + PHASE_S. The rate
    is taken between the first and the last predictions that ended after the warm-up (so
    neither the clients starting nor the last ones finishing count)."""
    started = time.monotonic()
    stop_at = started + WARMUP_S + PHASE_S

    def client() -> list[tuple[float, list[dict]]]:
        ended = []
        with httpx.Client(base_url=api.url, timeout=60) as http:
            while time.monotonic() < stop_at:
                body = [{"x": next(_inputs), "hold": HOLD_S} for _ in range(BATCH)]
                response = http.post("/predictions", json=body)
                assert response.status_code == 200, response.text
                prediction_id = response.json()["prediction_id"]
                while (result := http.get(f"/predictions/{prediction_id}", params={"wait": 30}).json())[
                    "status"
                ] not in ("success", "failed"):
                    pass
                assert result["status"] == "success", result
                # Every input ended once, with its own output.
                assert [o["x"] for o in result["outputs"]] == [i["x"] for i in body]
                ended.append((time.monotonic(), result["outputs"]))
        return ended

    with concurrent.futures.ThreadPoolExecutor(CLIENTS_PER_WORKER * workers) as pool:
        futures = [pool.submit(client) for _ in range(CLIENTS_PER_WORKER * workers)]
        ended = sorted((e for f in futures for e in f.result()), key=lambda e: e[0])
    counted = [(at, outputs) for at, outputs in ended if at >= started + WARMUP_S]
    seconds = counted[-1][0] - counted[0][0]
    # What ended after the first ones (one per worker, which may end together) ran in between.
    inputs = sum(len(outputs) for _, outputs in counted[workers:])
    outputs = [o for _, batch in counted for o in batch]
    return Phase(
        workers,
        one_way_ms,
        inputs,
        round(seconds, 3),
        round(inputs / seconds, 1),
        round(len(outputs) / len({o["batch_id"] for o in outputs}), 1),
    )


def _round_trip_s(address: str, port: int) -> float:
    """The median time of 5 TCP handshakes with ``address:port`` (one round trip each)."""
    times = []
    for _ in range(5):
        started = time.monotonic()
        socket.create_connection((address, port), timeout=5).close()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def test_two_worker_hosts_serve_twice_one_over_a_slow_redis_link(
    delayed_network: Network, make_cluster: Callable[..., Cluster]
) -> None:
    network = delayed_network
    cluster = make_cluster(network)
    cluster.start_redis()
    api = cluster.start_api(RECORDER)
    cluster.start_worker("w1", RECORDER, "--batch-size", str(BATCH))
    api.wait_ready(workers=1)
    client = network["client"]

    def phase(workers: int, one_way_ms: float) -> Phase:
        network.set_delay(one_way_ms)
        return client.call(_measure, api, workers, one_way_ms)

    fast_rtt = network["w1"].call(_round_trip_s, cluster.redis_address, REDIS_PORT)
    one_fast = phase(1, 0)
    one_slow = phase(1, ONE_WAY_MS)
    slow_rtt = network["w1"].call(_round_trip_s, cluster.redis_address, REDIS_PORT)
    cluster.start_worker("w2", RECORDER, "--batch-size", str(BATCH))
    api.wait_ready(workers=2)
    two_slow = phase(2, ONE_WAY_MS)
    two_fast = phase(2, 0)

    figures = {
        "link": network.delay_mechanism,
        "round_trip_ms": {"fast": round(fast_rtt * 1000, 2), "slow": round(slow_rtt * 1000, 2)},
        "phases": [{**asdict(p), "of_ideal": round(p.of_ideal, 3)} for p in (one_fast, one_slow, two_slow, two_fast)],
        "two_over_one": {
            "fast": round(two_fast.inputs_per_s / one_fast.inputs_per_s, 3),
            "slow": round(two_slow.inputs_per_s / one_slow.inputs_per_s, 3),
        },
    }
    record_figures("two worker hosts over a Redis link with latency (inputs/s)", figures)
    assert slow_rtt >= 2 * ONE_WAY_MS / 1000, figures  # the latency is really there
    assert two_slow.inputs_per_s >= 1.8 * one_slow.inputs_per_s, figures
    # Batching is what hides the round trips: full batches, and latency costs little.
    assert min(p.mean_batch for p in (one_slow, two_slow)) >= 0.9 * BATCH, figures
    assert one_slow.inputs_per_s >= 0.9 * one_fast.inputs_per_s, figures
