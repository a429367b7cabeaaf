"""The limit a server is measured against: ``predict`` called in a loop, in this process.

    python bench/direct.py MODEL_FOLDER [--batch 32] [--seconds 3] [--input JSON]

Batches are formed once, before timing (pre-validated input objects), so the figure is
the model's own cost per input. A second figure adds what any server must also do per
output: serialise it to JSON. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tungstenkit._loader import load_model


def measure(predict, batch, seconds: float, serialise: bool) -> tuple[float, int]:
    predict(batch)  # warm
    done = 0
    start = time.perf_counter()
    while True:
        outputs = predict(batch)
        if serialise:
            [o.model_dump_json() for o in outputs]
        done += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--input", default='{"text": "r%i"}')
    args = parser.parse_args(argv)
    definition = load_model(args.model)
    model = definition.cls()
    model.setup()
    batch = [definition.input_cls.model_validate_json(args.input.replace("%i", str(i))) for i in range(args.batch)]
    rate, done = measure(model.predict, batch, args.seconds, serialise=False)
    rate_serialised, _ = measure(model.predict, batch, args.seconds, serialise=True)
    print(
        json.dumps(
            {
                "model": str(args.model),
                "batch": args.batch,
                "inputs": done,
                "inputs_per_s": round(rate, 1),
                "inputs_per_s_serialised": round(rate_serialised, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
