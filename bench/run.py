"""Benchmark scenarios: start the servers, run the load, write results.

    python bench/run.py SCENARIO [SCENARIO ...] [--quick] [--reps N] [--no-tk] [--out DIR]

Scenarios (those of issue 5, plus the helpers):

    a   no-op model, 1 client: the latency floor
    b   no-op model, 64 clients: the server's own overhead
    c   fixed 20 ms per batch (<= 32 inputs), 64 single-input clients (ideal 1,600 inputs/s)
    d   the same with 16 clients x 4 inputs and 4 clients x 32 inputs
    e   examples/text_to_image on the CPU, 16 single-input clients
    f   open loop: latency against arrival rate, fixed 20 ms model, 1 input per request
    g   fixed 100 ms per batch, 4 inputs per request, 32 clients: 1 worker vs 2 workers
    tk-poll   Tungstenkit's poll interval swept (how the fair interval was chosen)
    accounting   Redis commands per input and per batch, by process and by script (MONITOR)
    profile   py-spy samples of our API and worker under the loads of (b), (c) and (d) 4 x 32
    all   a b c d e f g accounting, then the report
    report   rebuild results/README.md and the plot from the JSON files already there

Each scenario writes ``results/<name>.json`` (every run, every figure) and
``results/<name>.md`` (its table); ``report`` writes ``results/summary.md`` with the
targets and ``results/throughput_latency.png``. Every comparison with Tungstenkit
alternates the two servers run by run, with both running throughout, and every ratio is
taken between runs of one invocation. ``--quick`` shortens every run to a few seconds.
``--baseline DIR`` alternates our server with the one of another checkout (its own
``.venv``): a change measured against the code before it, run by run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BENCH, ROOT, OurServer, TungstenkitServer

MODELS = BENCH / "models"
TEXT_TO_IMAGE = ROOT / "examples" / "text_to_image"
RESULTS = BENCH / "results"
TEXT_INPUT = '{"text": "r%i"}'
PROMPT_INPUT = '{"prompt": "a professional photograph of an astronaut riding a horse", "seed": 7}'

#: Tungstenkit has no long-poll; clients poll its GET every this many ms. Chosen per
#: scenario as the best interval of the ``tk-poll`` sweep (results/tk-poll.md).
TK_POLL_MS = {"a": 1.0, "b": 5.0, "c": 10.0, "d": 10.0, "e": 10.0, "f": 5.0}


@dataclass
class LoadSpec:
    label: str
    clients: int = 0
    rate: float = 0.0
    inputs: int = 1


@dataclass
class Scenario:
    name: str
    title: str
    model: Path
    loads: list[LoadSpec]
    ideal_inputs_per_s: float | None = None
    input_template: str = TEXT_INPUT
    tk: bool = True
    workers: tuple[int, ...] = (1,)
    direct_batch: int = 32
    max_reps: int = 99
    note: str = ""


SCENARIOS: dict[str, Scenario] = {
    "a": Scenario("a", "no-op model, 1 client (latency floor)", MODELS / "noop", [LoadSpec("1 client x 1", clients=1)]),
    "b": Scenario(
        "b", "no-op model, 64 clients (server overhead)", MODELS / "noop", [LoadSpec("64 clients x 1", clients=64)]
    ),
    "c": Scenario(
        "c",
        "fixed 20 ms per batch, 64 single-input clients",
        MODELS / "sleep20",
        [LoadSpec("64 clients x 1", clients=64)],
        ideal_inputs_per_s=1600,
    ),
    "d": Scenario(
        "d",
        "fixed 20 ms per batch, multi-input requests",
        MODELS / "sleep20",
        [LoadSpec("16 clients x 4", clients=16, inputs=4), LoadSpec("4 clients x 32", clients=4, inputs=32)],
        ideal_inputs_per_s=1600,
    ),
    "e": Scenario(
        "e",
        "examples/text_to_image on the CPU, 16 single-input clients",
        TEXT_TO_IMAGE,
        [LoadSpec("16 clients x 1", clients=16)],
        input_template=PROMPT_INPUT,
        direct_batch=8,
        # The example builds its PNG output with Image.from_bytes(data, "image/png");
        # Tungstenkit 0.2.20's Image.from_bytes takes the bytes only, so every batch fails there.
        tk=False,
        note="Tungstenkit not run: the example calls Image.from_bytes(data, mime), which 0.2.20 lacks.",
    ),
    "f": Scenario(
        "f",
        "open loop, fixed 20 ms per batch, 1 input per request",
        MODELS / "sleep20",
        [LoadSpec(f"{r} req/s", rate=r) for r in (100, 200, 400, 800, 1200, 1500)],
        ideal_inputs_per_s=1600,
        max_reps=1,
    ),
    "g": Scenario(
        "g",
        "fixed 100 ms per batch, 32 clients x 4 inputs: 1 vs 2 workers",
        MODELS / "sleep100",
        [LoadSpec("32 clients x 4", clients=32, inputs=4)],
        ideal_inputs_per_s=320,
        tk=False,
        workers=(1, 2),
    ),
}


@dataclass
class Timing:
    duration_s: float
    warmup_s: float
    reps: int

    @classmethod
    def pick(cls, quick: bool, reps: int | None) -> Timing:
        if quick:
            return cls(2.0, 0.5, reps or 1)
        return cls(10.0, 2.0, reps or 3)


# ---------------------------------------------------------------------------------
# Running one load against one server


def run_load(server: Any, spec: LoadSpec, timing: Timing, *, template: str, poll_ms: float, tag: str) -> dict[str, Any]:
    out = RESULTS / "tmp" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--url",
        server.url,
        "--mode",
        server.mode,
        "--inputs",
        str(spec.inputs),
        "--duration",
        str(timing.duration_s),
        "--warmup",
        str(timing.warmup_s),
        "--poll-ms",
        str(poll_ms),
        "--input",
        template,
        "--json",
        str(out),
    ]
    if spec.clients:
        args += ["--clients", str(spec.clients)]
    else:
        args += ["--rate", str(spec.rate), "--timeout", "15"]
    for name, pid in server.pids().items():
        args += ["--pid", f"{name}={pid}"]
    if server.redis_address:
        args += ["--redis", server.redis_address]
    subprocess.run(args, check=True, timeout=timing.duration_s + timing.warmup_s + 120)
    result = json.loads(out.read_text())
    result["server"] = server.kind
    result["load"]["label"] = spec.label
    wait_idle(server)
    return result


def wait_idle(server: Any, timeout: float = 60.0) -> None:
    """Wait until the server's processes stop using CPU (a backlog from an overloaded run drained)."""
    from loadgen import proc_cpu_s

    pids = server.pids()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(proc_cpu_s(p) or 0 for p in pids.values())
        time.sleep(0.5)
        after = sum(proc_cpu_s(p) or 0 for p in pids.values())
        if after - before < 0.05:
            return


def direct_loop(model: Path, batch: int, template: str, seconds: float) -> dict[str, Any]:
    """The limit: the model's ``predict`` called in a loop on pre-formed batches, in-process."""
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "direct.py"),
            str(model),
            "--batch",
            str(batch),
            "--seconds",
            str(seconds),
            "--input",
            template,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=seconds * 3 + 120,
    )
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------
# Scenarios


@dataclass
class Options:
    api_procs: int = 1
    tk_log_level: str = "warning"
    tk_python: Path | None = None
    #: Another checkout of this project (with its own ``.venv``) to alternate with: a
    #: change measured against the code before it.
    baseline: Path | None = None


OPTIONS = Options()


def run_scenario(scenario: Scenario, timing: Timing, *, with_tk: bool, folder: Path) -> dict[str, Any]:
    print(f"== ({scenario.name}) {scenario.title}", flush=True)
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "title": scenario.title,
        "model": str(scenario.model.relative_to(ROOT)),
        "ideal_inputs_per_s": scenario.ideal_inputs_per_s,
        "timing": timing.__dict__,
        "host": host_info(),
        "note": scenario.note,
        "api_procs": OPTIONS.api_procs,
        "tk_log_level": OPTIONS.tk_log_level,
        "tk_python": str(OPTIONS.tk_python) if OPTIONS.tk_python else None,
        "runs": [],
    }
    direct_seconds = min(3.0, max(0.2, timing.duration_s / 3))
    record["direct"] = direct_loop(scenario.model, scenario.direct_batch, scenario.input_template, direct_seconds)
    print(f"   direct loop, batch {scenario.direct_batch}: {record['direct']['inputs_per_s']:.0f} inputs/s", flush=True)
    with_tk = with_tk and scenario.tk and TungstenkitServer.available()
    poll_ms = TK_POLL_MS.get(scenario.name, 5.0)
    record["tk_poll_ms"] = poll_ms if with_tk else None
    for workers in scenario.workers:
        servers: list[Any] = [
            OurServer(
                scenario.model, folder / f"{scenario.name}-w{workers}", workers=workers, api_procs=OPTIONS.api_procs
            )
        ]
        if OPTIONS.baseline:
            servers.append(
                OurServer(
                    scenario.model,
                    folder / f"{scenario.name}-base-w{workers}",
                    workers=workers,
                    api_procs=OPTIONS.api_procs,
                    root=OPTIONS.baseline,
                    kind="baseline",
                    python=str(OPTIONS.baseline / ".venv" / "bin" / "python"),
                )
            )
        if with_tk:
            servers.append(
                TungstenkitServer(
                    scenario.model,
                    folder / f"{scenario.name}-tk",
                    batch_size=scenario.direct_batch,
                    log_level=OPTIONS.tk_log_level,
                    **({"python": OPTIONS.tk_python} if OPTIONS.tk_python else {}),
                )
            )
        try:
            for server in servers:
                server.start()
            for rep in range(min(timing.reps, scenario.max_reps)):
                for spec in scenario.loads:
                    for server in servers:
                        tag = f"{scenario.name}-{server.kind}-w{workers}-{spec.label.replace(' ', '').replace('/', 'per')}-{rep}"
                        result = run_load(
                            server, spec, timing, template=scenario.input_template, poll_ms=poll_ms, tag=tag
                        )
                        result["workers"] = workers if server.kind in ("ours", "baseline") else 1
                        result["rep"] = rep
                        record["runs"].append(result)
                        print("   " + one_line(result), flush=True)
        finally:
            for server in servers:
                server.stop()
    record["table"] = scenario_table(record) + (f"\n\n{scenario.note}" if scenario.note else "")
    write(scenario.name, record)
    return record


def host_info() -> dict[str, Any]:
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpus": os.cpu_count(), "loadavg_at_start": load, "python": sys.version.split()[0]}


def one_line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['server']:<11} w{r.get('workers', 1)} {r['load']['label']:<16} {r['inputs_per_s']:>8.1f} in/s "
        f"{r['requests_per_s']:>7.1f} req/s  p50 {lat['p50']} p99 {lat['p99']} ms  batch {r['batches']['mean']}  "
        f"http/pred {r['http_per_prediction']}  cmds/in {r['redis_commands_per_input']}  "
        f"cpu {r['cpu_s']}  machine {r['machine_busy_cores']}  {r['statuses']}"
    )


def run_tk_poll(timing: Timing, folder: Path) -> dict[str, Any]:
    """Sweep Tungstenkit's poll interval on the loads of (a), (b) and (c)."""
    print("== (tk-poll) Tungstenkit poll interval sweep", flush=True)
    record: dict[str, Any] = {"scenario": "tk-poll", "timing": timing.__dict__, "runs": []}
    for name in ("a", "b", "c"):
        scenario = SCENARIOS[name]
        server = TungstenkitServer(scenario.model, folder / f"tkpoll-{name}")
        try:
            server.start()
            for poll_ms in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
                result = run_load(
                    server,
                    scenario.loads[0],
                    timing,
                    template=scenario.input_template,
                    poll_ms=poll_ms,
                    tag=f"tkpoll-{name}-{poll_ms}",
                )
                result["for_scenario"] = name
                record["runs"].append(result)
                print(f"   ({name}) poll {poll_ms:>4} ms: " + one_line(result), flush=True)
        finally:
            server.stop()
    lines = [
        "| scenario | poll ms | inputs/s | p50 ms | p99 ms | HTTP/prediction | TK server CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        lines.append(
            f"| ({r['for_scenario']}) | {r['load']['poll_ms']:g} | {r['inputs_per_s']:.0f} | {r['latency_ms']['p50']} | "
            f"{r['latency_ms']['p99']} | {r['http_per_prediction']} | {r['cpu_s'].get('tk-server')} |"
        )
    record["table"] = "\n".join(lines)
    write("tk-poll", record)
    return record


# ---------------------------------------------------------------------------------
# Redis command accounting (MONITOR)


class Monitor(threading.Thread):
    """Counts the commands Redis executes, by client connection and for Lua, while running."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(b"MONITOR\r\n")
        self.counts: dict[tuple[str, str], int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        buffer = b""
        while not self._halt.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                # +1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "sha" ...
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                source = line[line.index(b"[") + 1 : line.index(b"]")].split(b" ", 1)[1].decode()
                rest = line[line.index(b"]") + 2 :]
                parts = rest.split(b'"')
                command = parts[1].decode().lower() if len(parts) > 1 else "?"
                if command in ("evalsha", "eval") and len(parts) > 3:
                    command = f"{command}:{parts[3].decode()[:12]}"
                key = (source, command)
                self.counts[key] = self.counts.get(key, 0) + 1

    def stop(self) -> dict[tuple[str, str], int]:
        self._halt.set()
        self.sock.close()
        self.join(2)
        return dict(self.counts)


def socket_owners(pids: dict[str, int]) -> dict[int, str]:
    """Local TCP port -> process name, for the connections the named processes hold."""
    inodes: dict[str, str] = {}
    for name, pid in pids.items():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = name
        except OSError:
            continue
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    cols = row.split()
                    if cols[9] in inodes:
                        ports[int(cols[1].rsplit(":", 1)[1], 16)] = inodes[cols[9]]
        except OSError:
            continue
    return ports


def run_accounting(timing: Timing, folder: Path) -> dict[str, Any]:
    """Every command Redis runs during a short load, attributed to API, worker or Lua."""
    from tungstenkit._queue._scripts import script

    print("== (accounting) Redis commands per input and per batch", flush=True)
    names = ("submit", "start", "finish", "cancel", "requeue", "reclaim")
    scripts = {s.sha[:12]: s.name for s in (script(name) for name in names)}
    record: dict[str, Any] = {"scenario": "accounting", "runs": []}
    cases = [("b", SCENARIOS["b"].loads[0]), ("c", SCENARIOS["c"].loads[0])] + [
        ("d", spec) for spec in SCENARIOS["d"].loads
    ]
    short = Timing(min(timing.duration_s, 3.0), 0.5, 1)
    for name, spec in cases:
        scenario = SCENARIOS[name]
        server = OurServer(scenario.model, folder / f"acct-{name}")
        try:
            server.start()
            monitor = Monitor(server.redis_address)
            monitor.start()
            owners_before = socket_owners(server.pids())
            result = run_load(server, spec, short, template=scenario.input_template, poll_ms=0, tag=f"acct-{name}")
            owners = {**owners_before, **socket_owners(server.pids())}
            counts = monitor.stop()
        finally:
            server.stop()
        # MONITOR sees the whole run (warm-up included): normalise by what the run completed.
        by_process: dict[str, dict[str, int]] = {}
        for (source, command), n in counts.items():
            if source == "lua":
                who = "lua (inside scripts)"
            else:
                port = int(source.rsplit(":", 1)[1]) if ":" in source else -1
                who = owners.get(port, f"other ({source})")
            if command.startswith(("evalsha:", "eval:")):
                kind, sha = command.split(":", 1)
                command = f"{kind} {scripts.get(sha, sha)}"
            by_process.setdefault(who, {})
            by_process[who][command] = by_process[who].get(command, 0) + n
        summary = {
            "for_scenario": name,
            "label": spec.label,
            "by_process": by_process,
            "load_result": {k: result[k] for k in ("inputs_per_s", "batches", "redis_commands_per_input")},
        }
        record["runs"].append(summary)
        print(f"   ({name}) {spec.label}: {json.dumps(by_process)}", flush=True)
    write("accounting", record)
    return record


# ---------------------------------------------------------------------------------
# Profiles (py-spy)


def run_profile(timing: Timing, folder: Path) -> dict[str, Any]:
    """Sample the API and the worker with py-spy under the loads of (b), (c) and (d) 4 x 32."""
    import shutil

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    print("== (profile) where our API and worker spend their CPU", flush=True)
    # --gil: only samples of the thread holding the GIL, i.e. running Python (blocking
    # reads, sleeps and lock waits release it), so shares are shares of Python CPU time.
    # --threads keeps thread names; per-thread CPU seconds come from /proc.
    record: dict[str, Any] = {"scenario": "profile", "runs": []}
    out_dir = RESULTS / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = timing.duration_s
    cases = [("b", SCENARIOS["b"].loads[0]), ("c", SCENARIOS["c"].loads[0]), ("d", SCENARIOS["d"].loads[1])]
    for name, spec in cases:
        scenario = SCENARIOS[name]
        server = OurServer(scenario.model, folder / f"profile-{name}")
        try:
            server.start()
            pids = server.pids()
            samplers = []
            for proc in ("api", "worker-1"):
                raw = out_dir / f"{name}-{proc}.txt"
                samplers.append(
                    (
                        proc,
                        raw,
                        subprocess.Popen(
                            [
                                py_spy,
                                "record",
                                "--pid",
                                str(pids[proc]),
                                "--duration",
                                str(int(seconds)),
                                "--rate",
                                "100",
                                "--format",
                                "raw",
                                "--threads",
                                "--gil",
                                "--output",
                                str(raw),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        ),
                    )
                )
            # The worker's model thread by wall time (not only GIL time): file-system calls
            # and waits release the GIL but still delay the next batch. --nonblocking, so
            # that it can sample alongside the --gil sampler.
            wall = out_dir / f"{name}-worker-1-wall.txt"
            wall_sampler = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pids["worker-1"]),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "--output",
                    str(wall),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            threads_before = {proc: thread_cpu(pids[proc]) for proc in ("api", "worker-1")}
            result = run_load(
                server,
                spec,
                Timing(seconds, 0.5, 1),
                template=scenario.input_template,
                poll_ms=0,
                tag=f"profile-{name}",
            )
            threads_after = {proc: thread_cpu(pids[proc]) for proc in ("api", "worker-1")}
            for _, _, sampler in samplers:
                sampler.wait(60)
            wall_sampler.wait(60)
        finally:
            server.stop()
        entry = {"for_scenario": name, "load": one_line(result), "processes": {}}
        for proc, raw, _ in samplers:
            entry["processes"][proc] = summarize_profile(raw)
            names = thread_names(raw)
            entry["processes"][proc]["thread_cpu_s"] = {
                names.get(tid, tid): round(cpu - threads_before[proc].get(tid, 0.0), 3)
                for tid, cpu in threads_after[proc].items()
                if cpu - threads_before[proc].get(tid, 0.0) > 0.005
            }
        entry["model_thread_outside_predict"] = model_thread_outside_predict(wall, 200, result)
        record["runs"].append(entry)
        print(f"   ({name}) {one_line(result)}", flush=True)
    record["table"] = profile_table(record)
    write("profile", record)
    return record


def model_thread_outside_predict(path: Path, rate: float, result: dict[str, Any]) -> dict[str, Any]:
    """What the worker's main thread does between ``predict`` calls, in ms per batch.

    From py-spy samples of busy threads (idle threads excluded by py-spy); samples inside
    the model's ``predict`` are left out, the rest grouped by the first telling frame.
    Samples cover the whole recording; batches are counted over the load's window, so
    the per-batch figures are approximate.
    """
    groups = [
        ("temp folder per batch (mkdtemp/rmtree)", ("mkdtemp", "rmtree")),
        ("check and serialise outputs", ("check_outputs", "model_dump_json")),
        ("BatchBuffer (take/cut/finish)", ("BatchBuffer.",)),
        ("hand-offs to the writer/reader threads", ("Writer.", "Reader.room_made", "Condition.notify", "Event.set")),
    ]
    counts: dict[str, int] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not frames[0].endswith("MainThread"):
            continue
        names = [f.split(" (")[0] for f in frames[1:]]
        if any(n.endswith(".predict") and "ModelRunner" not in n for n in names):
            continue  # inside the model
        if "Worker._run_batch" not in names and "BatchBuffer.take" not in names:
            continue
        found = next((g for g, marks in groups if any(m in n for n in names for m in marks)), "other")
        counts[found] = counts.get(found, 0) + int(count_text)
    batches = max(1, round(result["batches"]["count"] or 1))
    return {g: round(n / rate * 1000 / batches, 3) for g, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` (by thread id), from /proc."""
    from loadgen import CLK_TCK

    found = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                found[tid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        pass
    return found


def thread_names(path: Path) -> dict[str, str]:
    """Thread id -> Python thread name, from py-spy's ``thread (TID): NAME`` frames."""
    names: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            head = line.split(";", 1)[0]
            if head.startswith("thread (") and "): " in head:
                tid, _, name = head[8:].partition("): ")
                names[tid] = name
    return names


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares by function and by module, from py-spy's collapsed stacks."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    modules: dict[str, int] = {}
    total = 0
    idle_markers = ("select (selectors.py", "epoll", "_run_once", "wait (threading.py", "poll (selectors.py")
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("thread (") and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        seen = set()
        for frame in frames:
            key = _frame_key(frame)
            if key not in seen:
                inclusive[key] = inclusive.get(key, 0) + count
                seen.add(key)
        module = _frame_module(leaf)
        modules[module] = modules.get(module, 0) + count
    share = lambda n: round(100 * n / total, 1) if total else 0.0
    return {
        "samples": total,
        "categories": [(k, share(v)) for k, v in sorted(categorize(path).items(), key=lambda kv: -kv[1])],
        "self_top": [(k, share(v)) for k, v in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]],
        "inclusive_top": [(k, share(v)) for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])[: top * 2]],
        "self_by_package": [(k, share(v)) for k, v in sorted(modules.items(), key=lambda kv: -kv[1])[:top]],
        "idle_markers": idle_markers,
    }


#: (category, what a frame's file path contains), by priority: a sample anywhere under a
#: redis-py frame is the Redis client's, even when its leaf is a socket write in asyncio.
CATEGORIES = [
    ("redis-py client (incl. its socket writes/reads)", ("redis/",)),
    ("temp folder per batch (mkdtemp/rmtree)", ("shutil.py", "tempfile.py")),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("json", ("json/",)),
    ("the model's predict", ("tungsten_model.py",)),
]
LEAF_CATEGORIES = [
    ("our code (app/, worker/, tungstenkit/)", ("app/", "worker/", "tungstenkit/")),
    ("starlette (routing, middleware, responses)", ("starlette/",)),
    ("uvicorn (HTTP protocol, incl. its socket writes)", ("uvicorn/",)),
    ("threading (waits, hand-offs)", ("threading.py",)),
    ("asyncio event loop", ("asyncio/",)),
]


def categorize(path: Path) -> dict[str, int]:
    """Samples per category (counts), from a py-spy raw file."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = [f for f in stack.split(";") if not f.startswith("thread (") and not f.startswith("process ")]
        if not frames:
            continue
        found = next((name for name, marks in CATEGORIES if any(m in f for f in frames for m in marks)), None)
        if found is None:
            # The innermost frame that belongs to a known package names the category.
            for frame in reversed(frames):
                found = next((name for name, marks in LEAF_CATEGORIES if any(m in frame for m in marks)), None)
                if found:
                    break
        found = found or "other"
        counts[found] = counts.get(found, 0) + int(count_text)
    return counts


def _frame_key(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({_short_path(file)})"


def _frame_module(frame: str) -> str:
    _, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    short = _short_path(file)
    return short.split("/")[0] if "/" in short else short


def _short_path(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def profile_table(record: dict[str, Any]) -> str:
    parts = []
    for run in record["runs"]:
        parts.append(f"### ({run['for_scenario']}) {run['load']}\n")
        outside = run.get("model_thread_outside_predict")
        if outside:
            parts.append(
                "Worker model thread between `predict` calls (py-spy wall samples, ms per batch): "
                + ", ".join(f"{k} {v}" for k, v in outside.items())
                + "\n"
            )
        for proc, summary in run["processes"].items():
            if not summary.get("samples"):
                continue
            parts.append(
                f"**{proc}**: {summary['samples']} samples of the GIL holder (py-spy --gil, 100/s); "
                f"CPU seconds per thread: {summary.get('thread_cpu_s')}\n"
            )
            parts.append("| where the CPU goes (category) | % |\n|---|---|")
            parts += [f"| {k} | {v} |" for k, v in summary["categories"]]
            parts.append("")
            parts.append("| self time by package/file | % |\n|---|---|")
            parts += [f"| `{k}` | {v} |" for k, v in summary["self_by_package"][:12]]
            parts.append("\n| inclusive time by function | % |\n|---|---|")
            parts += [f"| `{k}` | {v} |" for k, v in summary["inclusive_top"][:30]]
            parts.append("")
    return "\n".join(parts)


def write(name: str, record: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    if record.get("table"):
        (RESULTS / f"{name}.md").write_text(f"# ({name}) {record.get('title', '')}\n\n{record['table']}\n")


# ---------------------------------------------------------------------------------
# Tables


def scenario_table(record: dict[str, Any]) -> str:
    head = (
        "| server | workers | load | inputs/s | requests/s | p50 ms | p90 ms | p99 ms | mean batch | batch histogram "
        "| batch start-to-start p50 ms | HTTP/pred | Redis cmds/input | CPU s (per process) | loadgen CPU s | machine busy cores |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in record["runs"]:
        lat = r["latency_ms"]
        hist = " ".join(f"{k}:{v}" for k, v in r["batches"]["histogram"].items())
        if len(hist) > 60:
            hist = hist[:57] + "..."
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items() if v)
        lines.append(
            f"| {r['server']} | {r.get('workers', 1)} | {r['load']['label']} | {r['inputs_per_s']:.0f} | {r['requests_per_s']:.0f} "
            f"| {lat['p50']} | {lat['p90']} | {lat['p99']} | {r['batches']['mean']} | {hist} "
            f"| {r['batches'].get('interval_ms', {}).get('p50', '-')} | {r['http_per_prediction']} "
            f"| {r['redis_commands_per_input'] if r['redis_commands_per_input'] is not None else '-'} | {cpu} "
            f"| {r['cpu_s_loadgen']} | {r['machine_busy_cores']} |"
        )
    base = [r for r in record["runs"] if r["server"] == "baseline"]
    ours = [r for r in record["runs"] if r["server"] == "ours"]
    if base:
        pairs = [(o, b) for o in ours for b in base if (o["rep"], o["load"]["label"]) == (b["rep"], b["load"]["label"])]
        ratios = sorted(o["inputs_per_s"] / b["inputs_per_s"] for o, b in pairs if b["inputs_per_s"])
        if ratios:
            lines.append(
                f"\nThis checkout / baseline, inputs/s of adjacent runs: median {statistics.median(ratios):.3f} "
                f"(each: {', '.join(f'{r:.3f}' for r in ratios)})."
            )
    d = record["direct"]
    lines.append(
        f"\nDirect in-process loop (`predict` on pre-formed batches of {d['batch']}): "
        f"{d['inputs_per_s']:.0f} inputs/s; with output serialisation {d['inputs_per_s_serialised']:.0f} inputs/s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--quick", action="store_true", help="a few seconds per run")
    parser.add_argument("--reps", type=int, help="alternations of the servers per load [3; quick 1]")
    parser.add_argument("--duration", type=float, help="measured seconds per run [10; quick 2]")
    parser.add_argument("--warmup", type=float, help="seconds before each run's window [2; quick 0.5]")
    parser.add_argument("--api-procs", type=int, default=1, help="API processes of our server [1]")
    parser.add_argument(
        "--tk-log-level", default="warning", help="Tungstenkit's --log-level [warning; its default: info]"
    )
    parser.add_argument("--tk-venv", type=Path, help="another venv with Tungstenkit [bench/.venv-tk]")
    parser.add_argument("--no-tk", action="store_true", help="skip Tungstenkit even if bench/.venv-tk exists")
    parser.add_argument("--out", type=Path, help="results folder [bench/results]")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of this project, with its own .venv, run alternately with this one",
    )
    args = parser.parse_args(argv)
    global RESULTS
    if args.out:
        RESULTS = args.out.resolve()
    timing = Timing.pick(args.quick, args.reps)
    OPTIONS.api_procs = args.api_procs
    OPTIONS.tk_log_level = args.tk_log_level
    OPTIONS.tk_python = (args.tk_venv.resolve() / "bin" / "python") if args.tk_venv else None
    OPTIONS.baseline = args.baseline.resolve() if args.baseline else None
    if args.duration:
        timing.duration_s = args.duration
    if args.warmup is not None:
        timing.warmup_s = args.warmup
    folder = RESULTS / "tmp"
    names = []
    for name in args.scenarios:
        names += ["a", "b", "c", "d", "e", "f", "g", "accounting", "report"] if name == "all" else [name]
    for name in names:
        if name in SCENARIOS:
            run_scenario(SCENARIOS[name], timing, with_tk=not args.no_tk, folder=folder)
        elif name == "tk-poll":
            run_tk_poll(timing, folder)
        elif name == "accounting":
            run_accounting(timing, folder)
        elif name == "profile":
            run_profile(timing, folder)
        elif name == "report":
            import report

            report.build(RESULTS)
        else:
            parser.error(f"unknown scenario {name!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
