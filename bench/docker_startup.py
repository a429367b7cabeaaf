"""From `tungsten build` to the first prediction answered by a container, and the image's size.

    python bench/docker_startup.py MODEL_FOLDER INPUT_JSON [--runs 2] [--keep]

Each run: `tungsten build MODEL_FOLDER` (image included) with a fresh model store, then
`docker run --rm -p PORT:3000 NAME:TAG`, then one `POST /predict` until it answers
success. The first run after the package changed builds every layer (cold: the runtime's
dependencies are installed); later runs reuse the layers up to the model's files (warm).
Prints one JSON object per run; the images are removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tungstenkit._redis_server import free_port


def one_run(model: Path, inputs: list[dict[str, object]]) -> dict[str, object]:
    reference = f"bench-{uuid.uuid4().hex[:8]}:v1"
    with tempfile.TemporaryDirectory() as home:
        start = time.monotonic()
        built = subprocess.run(
            [sys.executable, "-m", "tungstenkit.cli", "build", str(model), "-n", reference, "--image"],
            capture_output=True,
            text=True,
            env={**os.environ, "TUNGSTEN_HOME": home},
            check=False,
        )
        if built.returncode != 0:
            raise SystemExit(built.stderr)
        build_s = time.monotonic() - start
    port = free_port()
    container = subprocess.run(
        ["docker", "run", "--detach", "--rm", "-p", f"127.0.0.1:{port}:3000", reference],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/predict", json=inputs, timeout=60)
                if response.status_code == 200 and response.json()["status"] == "success":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # a poll interval
        first_s = time.monotonic() - start
    finally:
        subprocess.run(["docker", "kill", container], capture_output=True, check=False)
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", reference],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {
        "model": str(model),
        "reference": reference,
        "build_s": round(build_s, 1),
        "build_to_first_prediction_s": round(first_s, 1),
        "image_bytes": size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("inputs", help="the JSON list of inputs of the prediction")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the images")
    args = parser.parse_args(argv)
    references = []
    try:
        for _ in range(args.runs):
            result = one_run(args.model, json.loads(args.inputs))
            references.append(str(result["reference"]))
            print(json.dumps(result), flush=True)
    finally:
        if not args.keep:
            for reference in references:
                subprocess.run(["docker", "image", "rm", reference], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
