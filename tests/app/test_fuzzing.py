"""Schemathesis fuzzes a real `tungsten serve` from its own ``/openapi.json``: no generated
request gets a 5xx, and every response conforms to the documented schema (status code,
content type, headers and body). Every phase runs: the schema's examples, its coverage
(boundary and invalid values), random fuzzing, and stateful sequences that follow the
documented links (create a prediction, then read and cancel it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import MODELS, ServerFactory

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)
#: Short waits, so that fuzzed ?wait= and POST /predict do not hold the run.
#: Likewise event streams (without a worker, a prediction's stream would never end).
QUICK = {"TUNGSTEN_MAX_WAIT_S": "1", "TUNGSTEN_SYNC_TIMEOUT_S": "2", "TUNGSTEN_MAX_STREAM_S": "1"}
#: Test cases per operation and phase: about half a minute per model on a 2-core machine.
EXAMPLES = "60"


@pytest.mark.parametrize(
    ("model", "workers", "skipped"),
    [
        # Every scalar kind and constraint; predictions run to the end.
        ("scalars", 1, []),
        # Every file kind: what the API checks before a worker would fetch anything. No
        # worker (it would try to download fuzzed URLs), so not the two operations that need
        # one to succeed (/health is 503 and /predict 504 without one, as documented).
        ("files", 0, ["--exclude-path", "/health", "--exclude-path", "/predict"]),
    ],
)
def test_no_generated_request_breaks_the_api_or_its_schema(
    serve: ServerFactory, tmp_path: Path, model: str, workers: int, skipped: list[str]
) -> None:
    server = serve(MODELS / model, env=QUICK, workers=workers)
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a test dependency: pip install -e '.[test]'"
    run = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            EXAMPLES,
            "--request-timeout",
            "10",
            "--no-color",
            "--warnings",
            "off",
            *skipped,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # where schemathesis keeps its example database
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    generated = re.search(r"(\d+) generated, \1 passed", run.stdout)
    assert generated and int(generated[1]) > 200, run.stdout[-3000:]
