"""``tungsten predict --url``: predictions from a running server, one or a whole file."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from tungstenkit.client import AsyncClient, Client
from tungstenkit.client._batch import OUTPUTS_FILE, BatchReport, run_input_file
from tungstenkit.client._payload import SchemaWalker, save_files, with_local_files

#: Failures listed one by one in the summary; the rest are counted.
SHOWN_FAILURES = 10


def predict_one(url: str, values: dict[str, Any], output_dir: Path, api_key: str | None = None) -> Any:
    """One prediction: local files named in file fields are sent, output files saved in ``output_dir``."""
    with Client(url, api_key=api_key) as client:
        walker = SchemaWalker(client.schema()["input_schema"])
        output = client.predict(with_local_files(walker, values, Path.cwd()))
    return save_files(output, output_dir, uuid.uuid4().hex[:12])


class ProgressBar:
    """A tqdm bar on stderr: inputs done of all, rate, ETA, and failures so far."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._failed = 0

    def start(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=done,
            unit="input",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.25,
            smoothing=0.1,
        )

    def advance(self, succeeded: int, failed: int) -> None:
        self._failed += failed
        if failed:
            self._bar.set_postfix(failed=self._failed, refresh=False)
        self._bar.update(succeeded + failed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def predict_file(
    url: str, input_file: Path, output_dir: Path, concurrency: int, batch_size: int | None, api_key: str | None = None
) -> BatchReport:
    """Every input of ``input_file``, with a progress bar; see ``tungstenkit.client._batch``."""

    async def main() -> BatchReport:
        async with AsyncClient(url, max_connections=max(concurrency * 2, 10), api_key=api_key) as client:
            return await run_input_file(
                client, input_file, output_dir, concurrency=concurrency, batch_size=batch_size, progress=bar
            )

    bar = ProgressBar()
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        bar.close()
        raise click.ClickException(
            f"Interrupted: the results so far are in {output_dir / OUTPUTS_FILE}; run the same command again to "
            "finish (inputs already done are skipped)"
        ) from None
    finally:
        bar.close()


def summary(report: BatchReport, output_dir: Path) -> str:
    lines = [
        f"{report.total} inputs: {report.succeeded} succeeded, {report.failed} failed"
        + (f", {report.skipped} already done" if report.skipped else "")
        + f"; results in {output_dir / OUTPUTS_FILE}"
    ]
    for index, line, message in sorted(report.failures)[:SHOWN_FAILURES]:
        lines.append(f"  input {index} (line {line}): {message}")
    if report.failed > SHOWN_FAILURES:
        lines.append(f'  ... and {report.failed - SHOWN_FAILURES} more (status "failed" in {OUTPUTS_FILE})')
    return "\n".join(lines)
