"""Hosts cut off from the network under load: a worker host in the middle of a batch,
and the API host from Redis. Real processes, each on a host of its own (``netns``)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.cluster.hosts import Api, Cluster, Process
from tests.cluster.netns import Network
from tests.faults.load import Load, Report
from tests.support import MODELS, audit_runs, record_figures, wait_for

RECORDER = MODELS / "recorder"
#: A worker silent for 2 s is taken for dead (0.5 s heartbeats): short, to keep the tests fast.
HEARTBEAT_TTL_S = 2.0
HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT = {
    "TUNGSTEN_HEARTBEAT_TTL_S": f"{HEARTBEAT_TTL_S:g}",
    "TUNGSTEN_HEARTBEAT_INTERVAL_S": f"{HEARTBEAT_INTERVAL_S:g}",
}
#: The reaper looks every second (worker.model_worker.REAP_INTERVAL_S): a takeover comes
#: that long after the TTL at most, plus a beat, plus the machine being busy.
TAKEOVER_SLACK_S = 4.0
#: The API bounds each Redis call by 5 s (app.server.REDIS_SOCKET_TIMEOUT_S); an answer
#: may take that plus the request's own handling.
API_REDIS_TIMEOUT_S = 5.0

_pause = threading.Event()
_PROBE_X = itertools.count(10**9)


def _under_load(
    network: Network, cluster: Cluster, audit: Path, worker_hosts: list[str], *, clients: int, hold: float, pace: float
) -> tuple[Api, list[Process], Load]:
    """Redis, the API and a worker on each of ``worker_hosts`` (the recorder model, short
    heartbeats), and the fault suite's clients (``Load``) on the client host."""
    cluster.env.update(HEARTBEAT, RECORDER_AUDIT=str(audit))
    cluster.start_redis()
    api = cluster.start_api(RECORDER)
    workers = [cluster.start_worker(host, RECORDER) for host in worker_hosts]
    api.wait_ready(workers=len(workers))
    load = Load(api.url, clients=clients, hold=hold, pace=pace)
    network["client"].call(load.start)
    return api, workers, load


def _assert_each_ended_once(report: Report) -> None:
    assert report.lost == 0, report
    assert report.wrong_outputs == 0, report
    assert not report.failed, report
    assert report.completed == report.accepted, report


def _inputs_counted(api: Api, expected: int) -> float:
    """``tungsten_inputs_total{outcome="success"}`` once it reached ``expected`` (the
    workers report with their heartbeat)."""
    wait_for(
        lambda: api.counter("tungsten_inputs", "success") >= expected,
        30,
        interval=0.2,
        what=f"{expected} inputs counted in /metrics",
    )
    return api.counter("tungsten_inputs", "success")


# -- a worker host cut off in the middle of a batch -----------------------------------
def _running_batch(audit: Path, pid: int) -> list[int] | None:
    """The inputs of a batch that worker ``pid`` started and has not finished."""
    started = [xs for p, xs in audit_runs(audit, "start") if p == str(pid)]
    finished = {tuple(xs) for p, xs in audit_runs(audit, "done") if p == str(pid)}
    running = [xs for xs in started if tuple(xs) not in finished]
    return running[-1] if running else None


def _ran(audit: Path, pid: int, phase: str, inputs: Callable[[list[int]], bool]) -> bool:
    return any(p == str(pid) and inputs(xs) for p, xs in audit_runs(audit, phase))


def test_a_worker_host_cut_off_mid_batch(
    network: Network, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    api, (cut_off, successor), load = _under_load(
        network, make_cluster(network), audit, ["w1", "w2"], clients=3, hold=0.3, pace=0.25
    )
    client = network["client"]
    try:
        load.wait_accepted(12)
        batch = wait_for(
            lambda: _running_batch(audit, cut_off.pid),
            30,
            interval=0.005,
            what="a batch running on the host to cut off",
        )
        cut_at = network.cut("w1")
        # Its inputs are taken over once its heartbeat expired: the other host starts them.
        wait_for(
            lambda: _ran(audit, successor.pid, "start", lambda xs: bool(set(xs) & set(batch))),
            HEARTBEAT_TTL_S + TAKEOVER_SLACK_S + 10,
            interval=0.02,
            what="the takeover of the cut-off batch",
        )
        takeover_s = time.monotonic() - cut_at
        # Meanwhile the cut-off host ran its batch to the end (its model needs no Redis).
        wait_for(lambda: _ran(audit, cut_off.pid, "done", lambda xs: xs == batch), 30, what="the cut-off batch to end")
        assert api.health()["ready_workers"] == 1  # type: ignore[index]
        started_before = {x for _, xs in audit_runs(audit, "start") for x in xs}
        accepted_before = {x for xs in list(load.accepted.values()) for x in xs}
        restored_at = network.restore("w1")
        # It rejoins: its heartbeat is current again.
        wait_for(
            lambda: (api.health() or {}).get("ready_workers") == 2, 30, interval=0.05, what="the cut-off host to rejoin"
        )
        rejoin_s = time.monotonic() - restored_at
        load.wait_accepted(len(load.accepted) + 20, timeout=60)
    finally:
        load.stop()
    report = client.call(load.settle, api, "a worker host cut off mid-batch", audit)
    _assert_each_ended_once(report)

    # Its late results were rejected: the inputs run twice are inputs Redis had handed to
    # the cut-off host (its batch, and what its read in flight got around the cut, taken
    # over as well) before the link came back, and their outputs are the successor's.
    done_twice = {x for x, n in Counter(x for _, xs in audit_runs(audit, "done") for x in xs).items() if n > 1}
    assert set(batch) <= done_twice
    cut_off_ran = {x for p, xs in audit_runs(audit, "done") if p == str(cut_off.pid) for x in xs}
    assert done_twice <= accepted_before & cut_off_ran, done_twice - accepted_before
    outputs = _outputs_by_input(client.call(_bodies, api, load, set(_accepted_inputs(load))))
    assert {outputs[x]["worker_pid"] for x in done_twice} == {successor.pid}
    # ... and it took work again: results of its own stand for inputs that came later.
    assert any(o["worker_pid"] == cut_off.pid for x, o in outputs.items() if x not in started_before)
    wait_for(
        lambda: "results rejected: their inputs were taken over" in cut_off.log(),
        10,
        what="the cut-off worker to log its rejected results",
    )
    # ... and counted once: /metrics holds each accepted input once.
    accepted_inputs = len(_accepted_inputs(load))
    assert _inputs_counted(api, accepted_inputs) == accepted_inputs
    assert api.counter("tungsten_predictions", "success") == report.accepted

    # Not before its last heartbeat expired (it beat up to an interval before the cut).
    assert HEARTBEAT_TTL_S - HEARTBEAT_INTERVAL_S <= takeover_s <= HEARTBEAT_TTL_S + TAKEOVER_SLACK_S, takeover_s
    record_figures(
        "a worker host cut off mid-batch (recovery, s)",
        {
            "heartbeat_ttl_s": HEARTBEAT_TTL_S,
            "link_down_to_takeover_s": round(takeover_s, 2),
            "link_back_to_rejoin_s": round(rejoin_s, 2),
            "inputs_run_twice_late_results_rejected": len(done_twice),
            "accepted": report.accepted,
            "completed": report.completed,
            "lost": report.lost,
        },
    )


def _accepted_inputs(load: Load) -> list[int]:
    return [x for xs in load.accepted.values() for x in xs]


def _bodies(api: Api, load: Load, inputs: set[int]) -> list[dict]:
    """The ended bodies of the accepted predictions holding any of ``inputs``."""
    ids = [pid for pid, xs in load.accepted.items() if set(xs) & inputs]
    return [api.client.get(f"/predictions/{pid}").json() for pid in ids]


def _outputs_by_input(bodies: list[dict]) -> dict[int, dict]:
    return {output["x"]: output for body in bodies for output in body["outputs"]}


# -- the API host cut off from Redis ---------------------------------------------------
@dataclass
class Probe:
    method: str
    sent_at: float
    seconds: float
    status: str
    retry_after: str | None
    #: A POST's input.
    x: int | None = None


def _probe(api: Api, until: float) -> list[Probe]:
    """A POST and a GET of an unknown prediction, again and again, from three clients at
    once, until ``until`` (monotonic)."""
    probes: list[Probe] = []

    def one_client() -> None:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            for method in itertools.cycle(("POST", "GET")):
                if time.monotonic() >= until:
                    return
                sent_at = time.monotonic()
                x = next(_PROBE_X) if method == "POST" else None
                try:
                    if method == "POST":
                        response = http.post("/predictions", json=[{"x": x}])
                    else:
                        response = http.get(f"/predictions/{uuid.uuid4().hex}")
                    status, retry_after = str(response.status_code), response.headers.get("Retry-After")
                except httpx.TransportError as exc:
                    status, retry_after = type(exc).__name__, None
                probes.append(Probe(method, sent_at, time.monotonic() - sent_at, status, retry_after, x))
                _pause.wait(0.1)  # a client's pace, not a synchronisation

    threads = [threading.Thread(target=one_client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return probes


def _first_accepted(api: Api, timeout_s: float) -> tuple[float, str]:
    """POST every 50 ms until one is accepted: (when, its prediction id)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api.url, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                response = http.post("/predictions", json=[{"x": next(_PROBE_X)}])
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return time.monotonic(), response.json()["prediction_id"]
            _pause.wait(0.05)  # a client's pace
    raise AssertionError(f"no POST accepted within {timeout_s}s of the link's return")


def test_the_api_host_cut_off_from_redis(
    network: Network, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    api, _, load = _under_load(network, make_cluster(network), audit, ["w1"], clients=4, hold=0.05, pace=0.1)
    client = network["client"]
    try:
        load.wait_accepted(20)
        cut_at = network.cut("api")
        probes = client.call(_probe, api, cut_at + 2 * API_REDIS_TIMEOUT_S)
        restored_at = network.restore("api")
        accepted_at, prediction_id = client.call(_first_accepted, api, 60)
        probe = client.call(api.client.get, f"/predictions/{prediction_id}", params={"wait": 30}).json()
        assert probe["status"] == "success", probe
        probe_x = probe["outputs"][0]["x"]
        completed_at = time.monotonic()
        load.wait_accepted(len(load.accepted) + 20, timeout=60)
    finally:
        load.stop()

    # Cut off, it answered every request 503 with Retry-After, each within its Redis timeout.
    assert {p.status for p in probes} == {"503"}, Counter(p.status for p in probes)
    assert all(p.retry_after for p in probes)
    assert {p.method for p in probes} == {"POST", "GET"}
    slowest = max(p.seconds for p in probes)
    assert slowest <= API_REDIS_TIMEOUT_S + 1.5, slowest
    # The clients under load saw only 503s too, never a 500.
    assert set(load.refused) <= {"503"}, load.refused
    report = client.call(load.settle, api, "the API host cut off from Redis", audit)
    _assert_each_ended_once(report)
    assert report.duplicated_inputs == 0, report
    # Each input that ran, ran once and was counted once in /metrics.
    ran = {x for _, xs in audit_runs(audit, "done") for x in xs}
    assert _inputs_counted(api, len(ran)) == len(ran)
    # A POST sent while cut off and answered 503 was not queued: none ran, even once the
    # link came back (the API resets the connections it gave up on, so TCP does not deliver
    # their requests late). One sent just before the cut may have reached Redis with its
    # answer lost: that one runs, under an id no client was given.
    refused_after_cut = {p.x for p in probes if p.method == "POST"}
    refused_after_cut |= {x for sent_at, xs in load.refused_requests if sent_at > cut_at for x in xs}
    assert refused_after_cut and not ran & refused_after_cut, sorted(ran & refused_after_cut)
    orphans = ran - {x for xs in load.accepted.values() for x in xs} - {probe_x}

    recovery_s = accepted_at - restored_at
    record_figures(
        "the API host cut off from Redis (s)",
        {
            "cut_s": round(restored_at - cut_at, 2),
            "slowest_503_s": round(slowest, 2),
            "answers_while_cut": len(probes),
            "link_back_to_first_post_accepted_s": round(recovery_s, 2),
            "link_back_to_first_prediction_completed_s": round(completed_at - restored_at, 2),
            "accepted": report.accepted,
            "completed": report.completed,
            "lost": report.lost,
            "inputs_of_posts_answered_503_that_ran": len(orphans),
        },
    )
