"""What a worker counts from the report of a write: each input once, by what became of it."""

from __future__ import annotations

from tungstenkit._measurements import MetricDeltas
from tungstenkit._queue import Entry, EntryResult, WriteReport
from tungstenkit.worker.accounting import count_written


def _counted(report: WriteReport, results: list[EntryResult]) -> dict[str, float]:
    metrics = MetricDeltas()
    count_written(metrics, results, [], report)
    return {k: v for k, v in metrics.take().items() if k.startswith("inputs:")}


def _result(sid: str, count: int, kind: str = EntryResult.OUTPUTS) -> EntryResult:
    return EntryResult(Entry(sid, f"p-{sid}", 0, count, "", b"", total=count), kind, "")


def test_results_are_counted_by_outcome_once() -> None:
    results = [_result("1-0", 4), _result("2-0", 1, EntryResult.ERROR), _result("3-0", 2, EntryResult.DROPPED)]
    counted = _counted(WriteReport([], []), results)
    assert counted == {"inputs:success": 4, "inputs:failed": 1, "inputs:dropped": 2}


def test_a_result_that_lost_the_race_with_a_cancel_counts_as_dropped() -> None:
    results = [_result("1-0", 3), _result("2-0", 1)]
    counted = _counted(WriteReport([], [], discarded={"1-0"}), results)
    assert counted == {"inputs:success": 1, "inputs:dropped": 3}


def test_a_rejected_result_is_counted_by_the_worker_that_owns_its_entry() -> None:
    counted = _counted(WriteReport([], [], rejected={"1-0"}), [_result("1-0", 3)])
    assert counted == {}
