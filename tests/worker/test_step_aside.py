"""Read-ahead stepping aside in the worker's buffer (``BatchBuffer.set_aside`` and ``settle``)."""

from __future__ import annotations

import threading

from tungstenkit._queue import Entry, EntryResult
from tungstenkit.worker.buffer import BatchBuffer, Work


def _work(sid: str, priority: str = "normal", count: int = 2) -> Work:
    entry = Entry(sid, f"p-{sid}", 0, count, "g", b"", total=count, priority=priority)
    return Work(entry, list(range(count)))


def test_entries_set_aside_are_out_of_the_batches_reach_until_settled() -> None:
    buffer = BatchBuffer()
    low, normal = _work("1-0", "low"), _work("2-0")
    buffer.put([low, normal])
    offered = buffer.set_aside(lambda entry: entry.priority == "low")
    assert offered == [low] and buffer.buffered_inputs == 2
    batch = buffer.take(8, timeout_s=0)
    assert batch is not None and batch.sids == ["2-0"]  # the low entry cannot join a batch
    assert buffer.take(8, timeout_s=0) is None
    buffer.settle(offered, set())  # the queue kept nothing: it runs here after all
    assert buffer.buffered_inputs == 2
    batch = buffer.take(8, timeout_s=0)
    assert batch is not None and batch.sids == ["1-0"]


def test_entries_that_went_back_leave_without_a_result() -> None:
    buffer = BatchBuffer()
    low = _work("1-0", "low")
    buffer.put([low])
    offered = buffer.set_aside(lambda entry: True)
    buffer.settle(offered, {"1-0"})
    assert len(buffer) == 0 and buffer.buffered_inputs == 0 and buffer.held_sids() == set()
    assert buffer.drop_predictions({"p-1-0"}) == []  # no result: another holder has it now
    assert buffer.drain() == []


def test_started_entries_never_step_aside() -> None:
    buffer = BatchBuffer()
    big = _work("1-0", "low", count=6)
    buffer.put([big])
    assert buffer.take(4, timeout_s=0) is not None  # its first 4 inputs run
    assert buffer.set_aside(lambda entry: True) == []


def test_a_waiting_take_wakes_when_what_was_set_aside_comes_back() -> None:
    buffer = BatchBuffer()
    buffer.put([_work("1-0", "low")])
    offered = buffer.set_aside(lambda entry: True)
    taken: list[object] = []
    taker = threading.Thread(target=lambda: taken.append(buffer.take(8, timeout_s=5)))
    taker.start()
    buffer.settle(offered, set())
    taker.join(5)
    assert taken and taken[0] is not None


def test_an_entry_canceled_while_set_aside_stays_ended() -> None:
    buffer = BatchBuffer()
    low = _work("1-0", "low")
    buffer.put([low])
    offered = buffer.set_aside(lambda entry: True)
    dropped = buffer.drop_predictions({"p-1-0"})
    assert [r.kind for r in dropped] == [EntryResult.DROPPED]
    buffer.settle(offered, set())
    assert buffer.buffered_inputs == 0 and buffer.take(8, timeout_s=0) is None
