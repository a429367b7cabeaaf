"""A whole file of inputs sent to a server: ``tungsten predict --url URL --input-file FILE -o DIR``.

- Each line of FILE is one input object (a JSON object); blank lines are skipped. Strings in
  file fields may name local files, relative to FILE's folder: they are sent as data URIs.
- Inputs go in requests of up to the model's batch size, ``concurrency`` requests at a time.
- Each result is appended to ``DIR/outputs.jsonl`` as it arrives, one line per input:
  ``{"index": 0, "status": "success", "output": {...}, "input_sha256": ...}`` or
  ``{"index": 7, "status": "failed", "error": "...", ...}``; output files go to
  ``DIR/files/`` and the output holds their paths (relative to DIR). When every input has
  its line, the file is rewritten in input order.
- Running again with the same DIR skips the inputs that already succeeded (the same line
  of FILE, by its hash) and tries the others.
- A request of several inputs that fails is tried again one input at a time, so that one
  bad input does not fail its neighbours; a 422 fails only the inputs it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from tungstenkit.client._async import AsyncClient
from tungstenkit.client._errors import ClientError, InvalidInput
from tungstenkit.client._payload import SchemaWalker, encode_value, save_files, with_local_files

OUTPUTS_FILE = "outputs.jsonl"
FILES_DIR = "files"


class Progress(Protocol):
    """What the runner reports as it goes (the CLI shows a progress bar)."""

    def start(self, total: int, done: int) -> None: ...

    def advance(self, succeeded: int, failed: int) -> None: ...


@dataclass
class Item:
    index: int
    line: int
    sha256: str
    value: Any = None
    error: str | None = None


@dataclass
class BatchReport:
    total: int = 0
    #: Inputs that had succeeded in an earlier run.
    skipped: int = 0
    succeeded: int = 0
    #: ``(index, line, message)`` of each input that failed in this run.
    failures: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def read_inputs(path: Path) -> list[Item]:
    """The inputs of a JSONL file, each with its index (among non-blank lines) and hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"Cannot read {path}: {exc.strerror or exc}") from None
    items: list[Any] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        item = Item(len(items), number, hashlib.sha256(line.encode()).hexdigest())
        try:
            item.value = json.loads(line)
        except ValueError as exc:
            item.error = f"line {number} is not JSON: {exc}"
        else:
            if not isinstance(item.value, dict):
                item.error = f"line {number} is not a JSON object (one input per line)"
        items.append(item)
    return items


def read_records(path: Path) -> dict[int, dict[str, Any]]:
    """The latest record of each index in an ``outputs.jsonl`` (a torn last line is ignored)."""
    records: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("index"), int):
            records[record["index"]] = record
    return records


class _Writer:
    """Appends records to ``outputs.jsonl``, each flushed at once, and counts them."""

    def __init__(self, output_dir: Path, report: BatchReport, progress: Progress | None) -> None:
        self.dir = output_dir
        self.report = report
        self.progress = progress
        self._file: IO[str] | None = None

    @contextlib.contextmanager
    def opened(self) -> Iterator[_Writer]:
        path = self.dir / OUTPUTS_FILE
        torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        with path.open("a", encoding="utf-8") as self._file:
            if torn:
                self._file.write("\n")  # end the line a killed run left half-written
            yield self
        self._file = None

    def success(self, item: Item, output: Any) -> None:
        saved = save_files(output, self.dir / FILES_DIR, f"{item.index:06d}", relative_to=self.dir)
        self._write({"index": item.index, "status": "success", "output": saved, "input_sha256": item.sha256})
        self.report.succeeded += 1
        if self.progress is not None:
            self.progress.advance(1, 0)

    def failure(self, item: Item, message: str) -> None:
        self._write({"index": item.index, "status": "failed", "error": message, "input_sha256": item.sha256})
        self.report.failures.append((item.index, item.line, message))
        if self.progress is not None:
            self.progress.advance(0, 1)

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        loc = [str(p) for p in (error.get("loc") or [])[2:]]
        parts.append(f"{'.'.join(loc)}: {error.get('msg', '')}" if loc else str(error.get("msg", "")))
    return "Invalid input: " + "; ".join(parts)


class BatchRunner:
    """Sends the pending inputs of one input file and writes what comes back."""

    def __init__(self, client: AsyncClient, writer: _Writer, inputs: SchemaWalker, folder: Path) -> None:
        self.client = client
        self.writer = writer
        self._inputs = inputs
        self._folder = folder

    async def run(self, chunks: list[list[Item]], concurrency: int) -> None:
        queue: asyncio.Queue[list[Item]] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)

        async def work() -> None:
            while not queue.empty():
                await self.send(queue.get_nowait())

        await asyncio.gather(*(work() for _ in range(max(1, min(concurrency, len(chunks))))))

    def _encoded(self, chunk: list[Item]) -> list[tuple[Item, Any]]:
        """The chunk's inputs as JSON, local files read now (not all at once: they may be many)."""
        ready = []
        for item in chunk:
            try:
                ready.append((item, encode_value(with_local_files(self._inputs, item.value, self._folder))))
            except ClientError as exc:
                self.writer.failure(item, f"line {item.line}: {exc}")
        return ready

    async def send(self, chunk: list[Item]) -> None:
        encoded = self._encoded(chunk)
        chunk = [item for item, _ in encoded]
        if not chunk:
            return
        try:
            prediction_id = await self.client.submit([value for _, value in encoded])
        except InvalidInput as exc:
            await self._refused(chunk, exc)
            return
        except ClientError as exc:
            self._fail(chunk, str(exc))
            return
        try:
            prediction = await self.client.wait(prediction_id)
        except ClientError as exc:
            self._fail(chunk, str(exc))
            return
        if prediction.succeeded and prediction.outputs is not None:
            for item, output in zip(chunk, prediction.outputs):
                self.writer.success(item, output)
        elif len(chunk) > 1 and not prediction.canceled:
            for item in chunk:  # find which input failed it
                await self.send([item])
        else:
            self._fail(chunk, prediction.error_message or "failed")

    async def _refused(self, chunk: list[Item], exc: InvalidInput) -> None:
        by_input = exc.by_input()
        if None in by_input or not by_input:
            self._fail(chunk, str(exc))
            return
        for position, errors in by_input.items():
            if position is not None and 0 <= position < len(chunk):
                self.writer.failure(chunk[position], _message(errors))
        rest = [item for position, item in enumerate(chunk) if position not in by_input]
        if rest:
            await self.send(rest)

    def _fail(self, chunk: list[Item], message: str) -> None:
        for item in chunk:
            self.writer.failure(item, message)


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def run_input_file(
    client: AsyncClient,
    input_file: Path,
    output_dir: Path,
    *,
    concurrency: int = 4,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Send every input of ``input_file`` not already done in ``output_dir``; see the module's doc."""
    items = read_inputs(input_file)
    output_dir.mkdir(parents=True, exist_ok=True)
    earlier = read_records(output_dir / OUTPUTS_FILE)
    done = {
        item.index
        for item in items
        if earlier.get(item.index, {}).get("status") == "success"
        and earlier[item.index].get("input_sha256") == item.sha256
    }
    report = BatchReport(total=len(items), skipped=len(done))
    pending = [item for item in items if item.index not in done]
    metadata = await client.schema() if pending else {}
    walker = SchemaWalker(metadata.get("input_schema", {}))
    size = batch_size or int(metadata.get("batch_size") or 1)
    writer = _Writer(output_dir, report, progress)
    if progress is not None:
        progress.start(len(items), len(done))
    with writer.opened():
        for item in pending:
            if item.error is not None:
                writer.failure(item, item.error)
        sendable = [item for item in pending if item.error is None]
        runner = BatchRunner(client, writer, walker, input_file.parent)
        await runner.run(_chunks(sendable, size), concurrency)
    _rewrite_in_order(output_dir / OUTPUTS_FILE, items)
    return report


def _rewrite_in_order(path: Path, items: list[Item]) -> None:
    """Every input has its record: rewrite the file in input order, one line per input."""
    records = read_records(path)
    lines = [json.dumps(records[item.index]) for item in items if item.index in records]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(temporary, path)
