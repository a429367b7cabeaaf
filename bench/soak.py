"""Soak and chaos: `tungsten serve` under mixed load while faults strike at random.

    python -m bench.soak --minutes 60 [--seed N] [--clients 6] [--json soak.json]

Runs ``tungsten serve bench/models/soak`` with 2 workers, 2 API processes and its embedded
Redis, and a local webhook receiver. Client threads send a mix of requests: one input
and several (spanning batches), file inputs, cancels, ``?wait=`` reads, ``POST /predict``
and webhooks, each submit with an ``Idempotency-Key`` and sent again with it when its
connection broke (as a careful client does: a POST cut off by a killed API process may
have been queued). Every few seconds a fault chosen at random strikes:

    worker-kill      kill -9 a worker
    worker-pause     SIGSTOP a worker for twice the heartbeat TTL, then SIGCONT
    redis-kill       kill -9 Redis (serve restarts it from its append-only file)
    redis-pause      CLIENT PAUSE Redis for a few seconds
    redis-full       shrink Redis's maxmemory until writes fail, then restore it
    api-kill         kill -9 an API process
    receiver-down    stop the webhook receiver for a while

Checked throughout and at the end: every accepted prediction ends exactly once with the
right outputs for its inputs (none lost, none announced twice, none failed with a crash
verdict); ``/health`` answers within a second (503 while Redis is down); once the load
stops and the result TTL passes, Redis's key count and memory are back to their
baseline, the workers index holds exactly the live workers and RQ's registries are
empty; API and worker resident memory grows by less than 10% after warm-up. Prints a
table (``SoakReport.table``); ``tests/soak`` runs a short soak in CI.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_processes import NAMESPACE, Receiver, Served, rss_bytes
from soak_report import FAULTS, SoakReport

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "bench" / "models" / "soak"
#: Seconds of load before the faults start and memory baselines are taken.
WARMUP_S = 15.0
#: A prediction not ended this long after it was accepted counts as lost.
#: Times a submit is sent (with its Idempotency-Key) before a broken connection is a refusal.
SUBMIT_TRIES = 40
END_DEADLINE_S = 150.0
#: The longest /health may take to answer.
HEALTH_BOUND_S = 1.0
#: Resident memory may grow by less than this share after warm-up.
RSS_GROWTH_LIMIT = 0.10
#: Keys expiring within this are not counted as growth.
LASTING_TTL_S = 600
#: Key count and used memory of Redis at the end may exceed the baseline by this much.
KEY_TOLERANCE = 10
MEMORY_TOLERANCE_BYTES = 4 * 1024 * 1024

_pause = threading.Event()


def _sleep(seconds: float) -> None:
    _pause.wait(seconds)  # a pace, not a synchronisation


# ---------------------------------------------------------------------------------
# The soak


@dataclass
class _Accepted:
    prediction_id: str
    kind: str
    expected: list[tuple[int, int]]  # (x, blob bytes) per input
    at: float
    body: dict[str, Any] | None = None
    lost: str = ""


class Soak:
    def __init__(
        self,
        minutes: float,
        seed: int,
        clients: int,
        heartbeat_ttl_s: float = 4.0,
        result_ttl_s: int = 20,
        fault_gap_s: tuple[float, float] = (3.0, 6.0),
        faults: tuple[str, ...] = FAULTS,
        appendfsync: str = "always",
    ) -> None:
        self.minutes = minutes
        self.seed = seed
        self.clients = clients
        self.ttl_s = heartbeat_ttl_s
        self.result_ttl_s = result_ttl_s
        self.fault_gap_s = fault_gap_s
        self.faults = faults
        self.appendfsync = appendfsync
        self.random = random.Random(seed)
        self.report = SoakReport(minutes, seed)
        self.receiver = Receiver()
        self.accepted: list[_Accepted] = []
        self.announced: Counter[str] = Counter()
        #: When each prediction was announced (monotonic seconds), for diagnosis.
        self.announced_at: dict[str, list[float]] = {}
        self.health: list[tuple[float, float, str]] = []
        #: Faults injected: (began, ended, kind), monotonic seconds.
        self.timeline: list[tuple[float, float, str]] = []
        self.rss: dict[int, tuple[str, list[tuple[float, int]]]] = {}
        self._lock = threading.Lock()
        self._load_stop = threading.Event()
        self._stop = threading.Event()
        self._counter = iter(range(10**12))
        self.served: Served | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="tungsten-soak-"))

    # -- running --------------------------------------------------------------------
    def run(self) -> SoakReport:
        self.receiver.up()
        self.served = self._serve()
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        watchers = [
            threading.Thread(target=f, daemon=True) for f in (self._watch_health, self._watch_done, self._watch_rss)
        ]
        try:
            for thread in watchers:
                thread.start()
            baseline_keys, baseline_memory = self._redis_size()
            self.report.keys_baseline, self.report.memory_baseline = baseline_keys, baseline_memory
            self._baseline_names = self._key_names()
            for thread in threads:
                thread.start()
            started = time.monotonic()
            _sleep(WARMUP_S)
            self._warm_at = time.monotonic()
            faults = threading.Thread(target=self._inject_faults, daemon=True)
            faults.start()
            _sleep(max(0.0, self.minutes * 60 - (time.monotonic() - started)))
            self._stop.set()
            faults.join(60)
            self._load_stop.set()
            for thread in threads:
                thread.join(END_DEADLINE_S + 30)
            self._settle_end()
        finally:
            self._stop.set()
            self._load_stop.set()
            self._stop_serving()
            self.receiver.down()
        self._judge()
        return self.report

    def _serve(self) -> Served:
        from tungstenkit._redis_server import free_port

        port = free_port()
        home = self.folder / "home"
        env = {
            **os.environ,
            "TUNGSTEN_HOME": str(home),
            "TUNGSTEN_HEARTBEAT_INTERVAL_S": "0.5",
            "TUNGSTEN_HEARTBEAT_TTL_S": str(self.ttl_s),
            "TUNGSTEN_RESULT_TTL_S": str(self.result_ttl_s),
            "TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*",
            "TUNGSTEN_WEBHOOK_RETRIES": "2",
            "TUNGSTEN_WEBHOOK_BACKOFF_S": "1",
            "TUNGSTEN_WEBHOOK_TIMEOUT_S": "2",
            "TUNGSTEN_WEBHOOK_WORKERS": "1",
            "TUNGSTEN_SYNC_TIMEOUT_S": "30",
            "TUNGSTEN_REDIS_APPENDFSYNC": self.appendfsync,
        }
        for name in ("TUNGSTEN_REDIS_URL", "REDIS_URL"):
            env.pop(name, None)
        log_path = self.folder / "serve.log"
        command = [
            sys.executable,
            "-m",
            "tungstenkit.cli",
            "serve",
            str(MODEL),
            "-p",
            str(port),
            "--host",
            "127.0.0.1",
            "--workers",
            "2",
            "--api-processes",
            "2",
            "--namespace",
            NAMESPACE,
            "--log-level",
            "warning",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        served = Served(process, port, home, log_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"tungsten serve exited:\n{log_path.read_text()}")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200 and health.json()["ready_workers"] == 2:
                    return served
            except httpx.TransportError:
                pass
            _sleep(0.2)
        raise RuntimeError(f"tungsten serve did not get ready:\n{log_path.read_text()}")

    def _stop_serving(self) -> None:
        if self.served is None:
            return
        process = self.served.process
        for pids in self.served.roles().values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)  # none stays stopped
                except OSError:
                    pass
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- load -----------------------------------------------------------------------
    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        assert self.served is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{self.served.port}", timeout=40) as client:
            while not self._load_stop.is_set():
                kind = rng.choices(
                    ["single", "multi", "file", "predict", "cancel", "webhook"], [35, 20, 10, 10, 10, 15]
                )[0]
                try:
                    self._one(client, rng, kind)
                except httpx.TransportError as exc:
                    self._refused(type(exc).__name__)
                    _sleep(0.2)

    def _inputs(self, rng: random.Random, kind: str) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        count = rng.randint(2, 12) if kind == "multi" else 1
        inputs, expected = [], []
        for _ in range(count):
            with self._lock:
                x = next(self._counter)
            item: dict[str, Any] = {"x": x}
            size = -1
            if kind == "file":
                size = rng.randint(1, 20_000)
                item["blob"] = "data:application/octet-stream;base64," + base64.b64encode(rng.randbytes(size)).decode()
            if kind == "cancel":
                item["hold"] = 0.5
            inputs.append(item)
            expected.append((x, size))
        return inputs, expected

    def _one(self, client: httpx.Client, rng: random.Random, kind: str) -> None:
        inputs, expected = self._inputs(rng, kind)
        if kind == "predict":
            response = self._submit(client, "/predict", inputs, {})
            if response is None:
                return
            if response.status_code == 200:  # it ended: the body has no id to read it by
                self._accept(f"sync-{expected[0][0]}", kind, expected).body = response.json()
            elif response.status_code == 504:  # not within the sync timeout: read it by its id
                self._await(client, self._accept(response.json()["detail"]["prediction_id"], kind, expected))
            else:
                self._refused(str(response.status_code))
                _sleep(0.2)
            return
        params = {"webhook": self.receiver.url} if kind == "webhook" else {}
        response = self._submit(client, "/predictions", inputs, params)
        if response is None:
            return
        if response.status_code != 200:
            self._refused(str(response.status_code))
            _sleep(0.2)
            return
        accepted = self._accept(response.json()["prediction_id"], kind, expected)
        if kind == "cancel":
            _sleep(rng.uniform(0, 0.6))
            try:
                client.post(f"/predictions/{accepted.prediction_id}/cancel")
            except httpx.TransportError as exc:  # an API process killed: the prediction runs on
                self._refused(type(exc).__name__)
        self._await(client, accepted)

    def _submit(
        self, client: httpx.Client, path: str, inputs: list[dict[str, Any]], params: dict[str, str]
    ) -> httpx.Response | None:
        """POST as a careful client does: with an Idempotency-Key, sent again with the same
        key when the connection broke before an answer (an API process killed mid-request
        may have queued it: the retry names the prediction instead of making a second, and
        an accepted prediction is never one this run does not know of). None: no answer."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for _ in range(SUBMIT_TRIES):
            try:
                return client.post(path, json=inputs, params=params, headers=headers)
            except httpx.TransportError as exc:
                self._refused(type(exc).__name__)
                _sleep(0.5)
        return None

    def _accept(self, prediction_id: str, kind: str, expected: list[tuple[int, int]]) -> _Accepted:
        accepted = _Accepted(prediction_id, kind, expected, time.monotonic())
        with self._lock:
            self.accepted.append(accepted)
        return accepted

    def _await(self, client: httpx.Client, accepted: _Accepted) -> None:
        """Read the prediction until it ends; a 404 before that, or no end in time, is a loss."""
        while time.monotonic() - accepted.at < END_DEADLINE_S:
            try:
                response = client.get(f"/predictions/{accepted.prediction_id}", params={"wait": 10}, timeout=20)
            except httpx.TransportError:
                _sleep(0.2)
                continue
            if response.status_code == 404:
                accepted.lost = "404 before it ended"
                self._note_loss(accepted)
                return
            if response.status_code == 200 and response.json()["status"] in ("success", "failed"):
                accepted.body = response.json()
                return
            if response.status_code != 200:
                _sleep(0.2)
        accepted.lost = "not ended in time"
        self._note_loss(accepted)

    def _faults_near(self, at: float, before_s: float = 30, after_s: float = 10) -> str:
        near = [
            f"{kind} at {began - at:+.1f}s" for began, _end, kind in self.timeline if -before_s < began - at < after_s
        ]
        return ", ".join(near) or "none"

    def _note_duplicates(self) -> None:
        by_id = {a.prediction_id: a for a in self.accepted}
        for prediction_id, times in self.announced_at.items():
            if len(times) < 2:
                continue
            accepted = by_id.get(prediction_id)
            origin = accepted.at if accepted else times[0]
            when = ", ".join(f"{t - origin:+.1f}s" for t in times)
            kind = accepted.kind if accepted else "?"
            status = (accepted.body or {}).get("status") if accepted else None
            self.report.duplicated_details.append(
                f"{prediction_id} ({kind}, ended {status}; announced at {when} after acceptance; "
                f"faults: {self._faults_near(times[0], 60, times[-1] - times[0] + 10)})"
            )

    def _note_leftovers(self, admin: redis.Redis, added: set[str]) -> None:
        for name in sorted(added):
            if ":pred:" not in name:
                continue
            fields = admin.hgetall(name)
            shown = {k.decode(): v.decode(errors="replace")[:60] for k, v in fields.items()}
            self.report.leftover_details.append(f"{name} (ttl {admin.ttl(name)}): {shown}")

    def _note_loss(self, accepted: _Accepted) -> None:
        """What Redis holds of a lost prediction, and the faults around its acceptance."""
        try:
            admin = self._admin()
            try:
                fields = admin.hgetall(f"tungsten:{{{NAMESPACE}}}:pred:{accepted.prediction_id}")
            finally:
                admin.close()
            held = {k.decode(): v.decode(errors="replace")[:80] for k, v in fields.items()}
        except (redis.RedisError, OSError) as exc:
            held = {"error": str(exc)}
        with self._lock:
            self.report.lost_details.append(
                f"{accepted.prediction_id} ({accepted.kind}, {accepted.lost}; faults: {self._faults_near(accepted.at)}; "
                f"in Redis: {held or 'nothing'})"
            )

    def _refused(self, why: str) -> None:
        with self._lock:
            self.report.refused[why] += 1

    # -- watchers -------------------------------------------------------------------
    def _watch_health(self) -> None:
        assert self.served is not None
        url = f"http://127.0.0.1:{self.served.port}/health"
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                status = str(httpx.get(url, timeout=5).status_code)
            except httpx.TransportError as exc:
                status = type(exc).__name__
            with self._lock:
                self.health.append((began, time.monotonic() - began, status))
            _sleep(0.5)

    def _watch_done(self) -> None:
        """Counts the announcements of ended predictions: one each, never two."""
        channel = f"tungsten:{{{NAMESPACE}}}:done"
        while not self._stop.is_set():
            try:
                assert self.served is not None
                client = redis.Redis.from_url(self.served.redis_url(), socket_timeout=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message["type"] == "message":
                        for line in message["data"].split(b"\n"):
                            prediction_id = line.partition(b" ")[0].decode()
                            if prediction_id:
                                with self._lock:
                                    self.announced[prediction_id] += 1
                                    self.announced_at.setdefault(prediction_id, []).append(time.monotonic())
            except (redis.RedisError, OSError):
                _sleep(0.5)

    def _watch_rss(self) -> None:
        while not self._stop.is_set():
            assert self.served is not None
            now = time.monotonic()
            for role, pids in self.served.roles().items():
                if role not in ("api", "worker"):
                    continue
                for pid in pids:
                    rss = rss_bytes(pid)
                    if rss is not None:
                        with self._lock:
                            self.rss.setdefault(pid, (role, []))[1].append((now, rss))
            _sleep(2.0)

    # -- faults ---------------------------------------------------------------------
    def _inject_faults(self) -> None:
        while not self._stop.is_set():
            _sleep(self.random.uniform(*self.fault_gap_s))
            if self._stop.is_set():
                return
            kind = self.random.choice(self.faults)
            began = time.monotonic()
            try:
                if getattr(self, "_" + kind.replace("-", "_"))():
                    self.report.faults[kind] += 1
                    with self._lock:
                        self.timeline.append((began, time.monotonic(), kind))
            except (OSError, redis.RedisError) as exc:
                print(f"fault {kind} could not be injected: {exc}", file=sys.stderr)

    def _pick(self, role: str) -> int | None:
        assert self.served is not None
        pids = self.served.roles()[role]
        return self.random.choice(pids) if pids else None

    def _admin(self) -> redis.Redis:
        assert self.served is not None
        return redis.Redis.from_url(self.served.redis_url(), socket_timeout=5)

    def _worker_kill(self) -> bool:
        pid = self._pick("worker")
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def _worker_pause(self) -> bool:
        pid = self._pick("worker")
        if pid is None:
            return False
        os.kill(pid, signal.SIGSTOP)
        try:
            _sleep(2 * self.ttl_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        return True

    def _redis_kill(self) -> bool:
        pid = self._pick("redis")
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def _redis_pause(self) -> bool:
        admin = self._admin()
        try:
            admin.client_pause(2000)  # shorter than the heartbeat TTL: no worker is taken for dead
        finally:
            admin.close()
        _sleep(2.0)
        return True

    def _redis_full(self) -> bool:
        admin = self._admin()
        try:
            limit = admin.config_get("maxmemory")["maxmemory"]
            admin.config_set("maxmemory", 1)  # every write that needs memory is refused
            _sleep(3.0)
        finally:
            restore = self._admin()
            try:
                restore.config_set("maxmemory", limit)
            finally:
                restore.close()
                admin.close()
        return True

    def _api_kill(self) -> bool:
        pid = self._pick("api")
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def _receiver_down(self) -> bool:
        self.receiver.down()
        try:
            _sleep(self.random.uniform(3, 8))
        finally:
            self.receiver.up()
        return True

    # -- the end --------------------------------------------------------------------
    def _redis_size(self) -> tuple[int, int]:
        """Keys that stay (no expiry, or one beyond ``LASTING_TTL_S``), and used memory."""
        admin = self._admin()
        try:
            return len(self._key_names()), int(admin.info("memory")["used_memory"])
        finally:
            admin.close()

    def _key_names(self) -> set[str]:
        """Keys that stay. Those about to expire (a dead RQ worker's registration, say, kept
        for RQ's worker TTL) are not growth: they go by themselves."""
        admin = self._admin()
        try:
            names = [key for key in admin.scan_iter(count=1000)]
            with admin.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.ttl(name)
                ttls = pipe.execute()
            return {n.decode() for n, ttl in zip(names, ttls) if ttl == -1 or ttl > LASTING_TTL_S}
        finally:
            admin.close()

    def _settle_end(self) -> None:
        """After the load: wait until Redis has forgotten it (result TTL and RQ's), then measure."""
        report = self.report
        deadline = time.monotonic() + self.result_ttl_s + 90
        admin = self._admin()
        try:
            while True:
                keys, _ = self._redis_size()
                left = self._rq_left(admin)
                settled = keys <= report.keys_baseline + KEY_TOLERANCE and left == 0
                if settled or time.monotonic() > deadline:
                    break
                _sleep(1.0)
            _sleep(self.result_ttl_s + 2)  # every result written has expired
            report.keys_end, report.memory_end = self._redis_size()
            added = self._key_names() - getattr(self, "_baseline_names", set())
            report.keys_added = sorted({re.sub(r"[0-9a-f]{6,}", "*", name) for name in added})[:20]
            self._note_leftovers(admin, added)
            report.rq_registries_left = self._rq_left(admin)
            self._counted = int(admin.hget(f"tungsten:{{{NAMESPACE}}}:metrics", "inputs:success") or 0)
            assert self.served is not None
            listed = {w.decode() for w in admin.zrange(f"tungsten:{{{NAMESPACE}}}:workers", 0, -1)}
            live = {w for w in listed if admin.exists(f"tungsten:{{{NAMESPACE}}}:worker:{w}")}
            health = httpx.get(f"http://127.0.0.1:{self.served.port}/health", timeout=5).json()
            report.workers_index_ok = listed == live == {w["id"] for w in health["workers"]} and len(live) == 2
        finally:
            admin.close()

    def _rq_left(self, admin: redis.Redis) -> int:
        from rq import Queue
        from rq.registry import (
            DeferredJobRegistry,
            FailedJobRegistry,
            FinishedJobRegistry,
            ScheduledJobRegistry,
            StartedJobRegistry,
        )

        queue = Queue(f"tungsten-webhooks-{NAMESPACE}", connection=admin)
        left = queue.count + int(admin.llen(queue.intermediate_queue_key))  # taken, never started
        for registry in (
            StartedJobRegistry,
            FinishedJobRegistry,
            FailedJobRegistry,
            DeferredJobRegistry,
            ScheduledJobRegistry,
        ):
            left += registry(queue=queue).count
        return left

    def _judge(self) -> None:
        report = self.report
        report.accepted = len(self.accepted)
        for accepted in self.accepted:
            if accepted.body is None:
                report.lost += 1
                if not accepted.lost:  # the client never read it to its end: a bug of this soak
                    report.lost_details.append(f"{accepted.prediction_id} ({accepted.kind}, never read to its end)")
                continue
            body = accepted.body
            if body["status"] == "success":
                report.succeeded += 1
                got = [(o["x"], o["blob_bytes"]) for o in body["outputs"]]
                if got != accepted.expected:
                    report.wrong_outputs += 1
            else:
                message = body.get("error_message") or ""
                reason = "Canceled" if message == "Canceled" else message.split(":")[0][:60]
                report.failed[reason] += 1
                if "died" in message or "workers that died" in message:
                    report.false_crash_verdicts += 1
                if message == "Canceled" and accepted.kind != "cancel":
                    report.problems.append(f"{accepted.prediction_id} canceled without being asked to")
        report.duplicated = sum(1 for count in self.announced.values() if count > 1)
        self._note_duplicates()
        succeeded_inputs = sum(len(a.expected) for a in self.accepted if a.body and a.body["status"] == "success")
        report.counted_twice = max(0, getattr(self, "_counted", 0) - succeeded_inputs)
        report.health_checks = len(self.health)
        report.health_slow = sum(1 for _at, took, _status in self.health if took > HEALTH_BOUND_S)
        report.health_statuses = Counter(status for _at, _took, status in self.health)
        report.webhooks_delivered = len(self.receiver.predictions)
        self._judge_rss()
        checks = [
            (report.lost == 0, f"{report.lost} lost"),
            (report.wrong_outputs == 0, f"{report.wrong_outputs} wrong outputs"),
            (report.duplicated == 0, f"{report.duplicated} completed twice"),
            (report.counted_twice == 0, f"{report.counted_twice} inputs counted twice"),
            (report.false_crash_verdicts == 0, f"{report.false_crash_verdicts} false crash verdicts"),
            (set(report.failed) <= {"Canceled"}, f"failures other than cancels: {dict(report.failed)}"),
            (report.health_slow == 0, f"{report.health_slow} /health answers over {HEALTH_BOUND_S:g} s"),
            (
                report.keys_end <= report.keys_baseline + KEY_TOLERANCE,
                f"Redis keys {report.keys_baseline} -> {report.keys_end}",
            ),
            (
                report.memory_end <= report.memory_baseline + MEMORY_TOLERANCE_BYTES,
                f"Redis memory {report.memory_baseline} -> {report.memory_end}",
            ),
            (report.workers_index_ok, "the workers index does not hold exactly the live workers"),
            (report.rq_registries_left == 0, f"{report.rq_registries_left} jobs left in RQ"),
            (
                all(g < RSS_GROWTH_LIMIT for g in report.rss_growth.values()),
                f"resident memory grew: {report.rss_growth}",
            ),
            (report.succeeded > 0, "nothing succeeded"),
        ]
        report.problems += [why for ok, why in checks if not ok]

    def _judge_rss(self) -> None:
        """Per process alive after warm-up for at least a minute: growth from its first
        sample taken after warm-up (and after its own first 20 s) to its last."""
        growth: dict[str, list[float]] = {}
        warm = getattr(self, "_warm_at", 0.0)
        for role, samples in self.rss.values():
            settled = [(t, rss) for t, rss in samples if t >= warm and t >= samples[0][0] + 20]
            if len(settled) < 2 or settled[-1][0] - settled[0][0] < 60:
                continue
            growth.setdefault(role, []).append(settled[-1][1] / settled[0][1] - 1)
        self.report.rss_growth = {role: max(values) for role, values in growth.items()}
        self.report.rss_processes = {role: len(values) for role, values in growth.items()}


def run(
    minutes: float,
    seed: int | None = None,
    clients: int = 6,
    faults: tuple[str, ...] = FAULTS,
    appendfsync: str = "always",
) -> SoakReport:
    """Soak the server for ``minutes`` of load (plus warm-up and the wait for expiry)."""
    chosen = seed if seed is not None else random.randrange(10**6)
    return Soak(minutes, chosen, clients, faults=faults, appendfsync=appendfsync).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (faults after warm-up) [10]")
    parser.add_argument("--seed", type=int, help="seed of the fault and load choices [random]")
    parser.add_argument("--clients", type=int, default=6, help="client threads [6]")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the faults to choose from, comma-separated [all]")
    parser.add_argument("--appendfsync", default="always", help="the embedded Redis's fsync policy [always]")
    args = parser.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    report = run(args.minutes, args.seed, args.clients, faults, args.appendfsync)
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
