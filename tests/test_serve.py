"""`tungsten serve` as a whole: several workers, expiry, restarts, shutdown, remote workers."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import uuid
from collections import Counter
from pathlib import Path

from tests.support import MODELS, ServerFactory, audit_runs, start_worker, wait_for


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_share_the_work_and_no_input_runs_twice(serve: ServerFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(MODELS / "recorder", workers=2, env={"RECORDER_AUDIT": str(audit)})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: server.predict([{"x": i, "hold": 0.05}]), range(60)))
    assert [r["outputs"][0]["x"] for r in results] == list(range(60))
    runs = audit_runs(audit)
    counts = Counter(x for _pid, xs in runs for x in xs)
    assert counts == Counter(range(60))  # each input ran exactly once
    assert len({pid for pid, _xs in runs}) == 2  # on both workers


def test_results_expire_after_the_ttl(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", env={"TUNGSTEN_RESULT_TTL_S": "1"})
    prediction_id = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    assert server.result(prediction_id)["status"] == "success"
    wait_for(lambda: server.client.get(f"/predictions/{prediction_id}").status_code == 404, 10)


def test_a_worker_that_dies_is_restarted(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder")
    first = int(server.client.get("/health").json()["workers"][0]["pid"])
    os.kill(first, signal.SIGKILL)

    def replaced() -> bool:
        workers = server.client.get("/health").json()["workers"]
        return any(int(w["pid"]) != first and w["state"] == "ready" for w in workers)

    wait_for(replaced, 30, what="a new worker")
    assert server.predict([{"x": 5}])["status"] == "success"


def test_sigterm_stops_every_process_it_started(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", embedded_redis=True, workers=2)
    assert server.predict([{"x": 1}])["status"] == "success"
    children = _descendants(server.process.pid)
    assert len(children) >= 4  # redis-server, the API, two workers
    assert server.stop(signal.SIGTERM) == 0
    wait_for(lambda: not any(_alive(pid) for pid in children), 30, what="children to exit")


def test_a_killed_supervisor_leaves_no_orphans(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", embedded_redis=True)
    children = _descendants(server.process.pid)
    server.process.kill()
    server.process.wait()
    wait_for(lambda: not any(_alive(pid) for pid in children), 30, what="children to exit")


def test_embedded_redis_keeps_accepted_predictions_across_a_restart(serve: ServerFactory) -> None:
    first = serve(MODELS / "recorder", embedded_redis=True, workers=0)
    prediction_id = first.client.post("/predictions", json=[{"x": 42}]).json()["prediction_id"]
    assert first.stop() == 0
    second = serve(MODELS / "recorder", embedded_redis=True, workers=1)
    result = second.result(prediction_id)
    assert result["status"] == "success" and result["outputs"][0]["x"] == 42


def test_a_worker_from_elsewhere_joins_through_redis(serve: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server = serve(MODELS / "recorder", "--namespace", "remote-test", workers=0, namespace="remote-test")
    prediction_id = server.client.post("/predictions", json=[{"x": 9}]).json()["prediction_id"]
    assert server.client.get(f"/predictions/{prediction_id}").json()["status"] == "pending"
    home = {"TUNGSTEN_HOME": str(tmp_path / "home")}
    worker = start_worker(MODELS / "recorder", redis_url, "remote-test", home, tmp_path / "remote-worker.log")
    try:
        result = server.result(prediction_id)
        assert result["status"] == "success" and result["outputs"][0]["x"] == 9
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def test_trace_logs_each_batch_formed(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", "--log-level", "trace")
    assert server.predict([{"x": 1}, {"x": 2}])["status"] == "success"
    wait_for(lambda: "Batch 1: 2 inputs from 1 predictions" in server.log(), 10, what="the trace line")
    # The access log (debug and trace) shows request lines without their query string.
    token = f"secret-{uuid.uuid4().hex}"
    assert server.client.get("/health", params={"token": token}).status_code == 200
    wait_for(lambda: 'GET /health?... HTTP/1.1" 200' in server.log(), 10, what="the access line")
    assert token not in server.log()


def test_json_logs_carry_worker_batch_and_prediction_ids(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", "--log-level", "trace", "--log-format", "json")
    prediction_id = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]
    assert server.result(prediction_id)["status"] == "success"

    def batch_line() -> dict | None:
        for line in server.log().splitlines():
            record = json.loads(line)  # every line of every process is JSON
            if record.get("batch_id") and prediction_id in record.get("prediction_ids", ()):
                return record  # type: ignore[no-any-return]
        return None

    record = wait_for(batch_line, 10, what="the batch's JSON line")
    assert record["process"] == "worker" and record["worker"].count(":") == 2 and record["level"] == "trace"
    processes = {json.loads(line)["process"] for line in server.log().splitlines()}
    assert {"serve", "api", "worker", "webhooks"} <= processes


def test_several_api_processes_share_the_port(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", "--api-processes", "3")
    apis = [pid for pid in _descendants(server.process.pid) if b"_api" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(apis) == 3
    # /health answered by any one API process proves nothing about the others: wait until
    # all three have started, by which time each has printed whatever it prints at start.
    wait_for(lambda: server.log().count("Application startup complete") == 3, what="three API processes started")
    assert server.log().count("Uvicorn running on") == 1
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: server.predict([{"x": i}]), range(40)))
    assert [r["outputs"][0]["x"] for r in results] == list(range(40))


def test_workers_are_spread_over_the_gpus_given(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(MODELS / "recorder", "--gpus", "0,1", "--workers-per-gpu", "2", workers=None)
    workers = _descendants(server.process.pid)
    seen = []
    for pid in workers:
        if b" worker " not in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
            continue
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        seen.append(env.get(b"CUDA_VISIBLE_DEVICES"))
    assert sorted(seen) == [b"0", b"0", b"1", b"1"]
    server.wait_ready(workers=4)
