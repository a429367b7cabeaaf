"""``tungstenkit.progress``: a model reports how far its current batch has come."""

from __future__ import annotations

from collections.abc import Callable

#: Longest progress message kept (longer ones are cut).
MAX_MESSAGE_CHARS = 1000

Reporter = Callable[[int, int, str], None]


class _Current:
    """Where progress goes now: set by the worker while a batch runs (one at a time per
    process), None elsewhere (``tungsten predict``, tests), where reports are ignored."""

    reporter: Reporter | None = None


def progress(step: int, total: int, message: str = "") -> None:
    """Report the progress of the batch being predicted: ``step`` of ``total`` (and a short
    message), shown as ``progress`` in ``GET /predictions/{id}`` of each prediction in the
    batch and sent as a ``progress`` event. Call it from ``predict``; elsewhere it does nothing.

    >>> for step in range(50):
    ...     progress(step + 1, 50, "denoising")
    """
    if isinstance(step, bool) or isinstance(total, bool) or not isinstance(step, int) or not isinstance(total, int):
        raise TypeError("progress(step, total): step and total must be integers")
    if total < 1 or not 0 <= step <= total:
        raise ValueError(f"progress(step, total): need 0 <= step <= total and total >= 1, got {step}, {total}")
    reporter = _Current.reporter
    if reporter is not None:
        reporter(step, total, str(message)[:MAX_MESSAGE_CHARS])


def set_reporter(reporter: Reporter | None) -> None:
    """Route ``progress`` calls to ``reporter`` (the worker, while a batch runs), or nowhere."""
    _Current.reporter = reporter
