"""GPU scenario: ResNet-50 (random weights, fp16) served, against its raw ``predict`` loop.

    python bench/gpu_resnet.py [--workers 2] [--api-procs 4] [--batch 64] [--clients 64]
                               [--inputs 16] [--duration 20] [--device cuda]

1. The raw loop: ``bench/direct.py`` calls the model's ``predict`` on pre-formed batches of
   ``--batch`` inputs in one process (inputs generated on the device from seeds, labels
   copied back: exactly what one served batch does).
2. Served: a bench-owned Redis, ``tungsten serve`` with ``--workers`` worker processes
   sharing the GPU (so that one's host work — reading inputs, writing results — overlaps
   another's GPU work) plus ``--api-procs - 1`` more API-only ``tungsten serve --workers 0``
   processes on the same Redis; the closed-loop load generator spreads its clients over
   every API.

It prints and writes ``results/gpu_resnet.json`` and ``.md`` with served / raw (target
>= 0.90). On a machine without a GPU it runs on the CPU in float32: use a tiny load
(``--device cpu --batch 4 --clients 2 --inputs 2 --duration 5 --workers 1 --api-procs 1``)
to check that everything works; those numbers say nothing about a GPU.
See ``bench/gpu/README.md`` for running it on a GPU machine that lacks the serving
dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BENCH, ROOT, OurServer, free_port, http_get, wait_until

MODEL = BENCH / "models" / "resnet50"
SEED_INPUT = '{"seed": %i}'


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none"


def start_api_only(
    python: str, model: Path, redis_url: str, folder: Path, batch: int, env: dict[str, str]
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = folder / f"api-only-{port}.log"
    command = [
        python,
        "-m",
        "tungstenkit.cli",
        "serve",
        str(model),
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
        "--workers",
        "0",
        "--redis-url",
        redis_url,
        "--namespace",
        "bench",
        "--log-level",
        "warning",
        "--batch-size",
        str(batch),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "TUNGSTEN_HOME": str(folder / "home"), **env},
        )
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: (r := http_get(url + "/health")) is not None and r[0] == 200, 120, f"API on {port}", process, log
    )
    return process, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes sharing the GPU [2]")
    parser.add_argument("--api-procs", type=int, default=4, help="API processes [4]")
    parser.add_argument("--batch", type=int, default=64, help="max batch size [64]")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop clients [64]")
    parser.add_argument("--inputs", type=int, default=16, help="inputs per request [16]")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per served run [20]")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--raw-seconds", type=float, default=10.0, help="seconds of the raw loop [10]")
    parser.add_argument("--device", help="cuda or cpu [cuda when available]")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder")
    args = parser.parse_args(argv)

    env = {"BENCH_RESNET_BATCH": str(args.batch)}
    if args.device:
        env["BENCH_DEVICE"] = args.device
    os.environ.update(env)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "tmp" / "gpu"
    folder.mkdir(parents=True, exist_ok=True)
    record: dict = {"scenario": "gpu_resnet", "gpu": gpu_name(), "args": {k: str(v) for k, v in vars(args).items()}}

    print(f"raw predict loop, batch {args.batch} ...", flush=True)
    raw = subprocess.run(
        [
            sys.executable,
            str(BENCH / "direct.py"),
            str(MODEL),
            "--batch",
            str(args.batch),
            "--seconds",
            str(args.raw_seconds),
            "--input",
            SEED_INPUT,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    record["raw"] = json.loads(raw.stdout)
    print(f"   raw: {record['raw']['inputs_per_s']:.1f} inputs/s", flush=True)

    server = OurServer(MODEL, folder, workers=args.workers, batch_size=args.batch, env=env)
    extra: list[subprocess.Popen] = []
    try:
        server.start(timeout=600)
        urls = [server.url]
        for _ in range(args.api_procs - 1):
            process, url = start_api_only(sys.executable, MODEL, server.redis.url, folder, args.batch, env)
            extra.append(process)
            urls.append(url)
        out = folder / "served.json"
        command = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--url",
            ",".join(urls),
            "--clients",
            str(args.clients),
            "--inputs",
            str(args.inputs),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--input",
            SEED_INPUT,
            "--redis",
            server.redis_address,
            "--json",
            str(out),
        ]
        for name, pid in server.pids().items():
            command += ["--pid", f"{name}={pid}"]
        print(
            f"served: {args.workers} workers, {args.api_procs} API processes, {args.clients} clients x {args.inputs} inputs ...",
            flush=True,
        )
        subprocess.run(command, check=True)
        record["served"] = json.loads(out.read_text())
    finally:
        for process in extra:
            process.terminate()
        for process in extra:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()
    served = record["served"]
    ratio = served["inputs_per_s"] / record["raw"]["inputs_per_s"] if record["raw"]["inputs_per_s"] else None
    record["served_over_raw"] = round(ratio, 3) if ratio else None
    lat = served["latency_ms"]
    table = (
        "| device | raw inputs/s (batch {b}) | served inputs/s | served / raw | workers | API procs | p50 / p99 ms | mean batch | HTTP/pred | statuses |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {record['gpu'] if record['gpu'] != 'none' else 'CPU (' + str(os.cpu_count()) + ' cores)'} | {record['raw']['inputs_per_s']:.1f} "
        f"| {served['inputs_per_s']:.1f} | {record['served_over_raw']} | {args.workers} | {args.api_procs} | {lat['p50']} / {lat['p99']} "
        f"| {served['batches']['mean']} | {served['http_per_prediction']} | {served['statuses']} |"
    ).replace("{b}", str(args.batch))
    record["table"] = table
    stamp = time.strftime("%Y-%m-%d %H:%M")
    (args.out / "gpu_resnet.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "gpu_resnet.md").write_text(f"# GPU scenario: ResNet-50 served vs raw ({stamp})\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
