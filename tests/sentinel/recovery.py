"""Killing the primary under a served model, and timing how the service comes back.

Shared by ``tests/sentinel/test_failover.py`` and ``bench/sentinel_failover.py``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from tests.sentinel.replicas import SentinelSet

_pause = threading.Event()
#: Inputs of the probe's predictions: far above the load's (``tests.faults.load``), so
#: the audit of runs tells them apart.
_PROBE_X = itertools.count(10**9)


@dataclass
class Recovery:
    """Seconds from the primary's kill until..."""

    #: the Sentinels named a new primary, and it answered as one;
    failover_s: float
    #: a ``POST /predictions`` was accepted again;
    first_post_s: float
    #: a prediction accepted after the kill had succeeded;
    first_completed_s: float
    #: ``POST`` answers while no primary was known, by status (or transport error).
    refused: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kill_primary_and_time_recovery(sentinels: SentinelSet, api_url: str, timeout_s: float = 60.0) -> Recovery:
    """SIGKILL the primary; then POST one-input predictions every 50 ms until one is
    accepted, and wait for it to succeed. The Sentinels are watched meanwhile."""
    old = sentinels.primary_port()
    assert old is not None, "the Sentinels do not agree on a primary"
    promoted: list[float] = []

    def watch(killed_at: float) -> None:
        sentinels.wait_new_primary(old, timeout_s)
        promoted.append(time.monotonic() - killed_at)

    refused: dict[str, int] = {}
    killed_at = time.monotonic()
    sentinels.kill(old)
    watcher = threading.Thread(target=watch, args=(killed_at,), daemon=True)
    watcher.start()
    with httpx.Client(base_url=api_url, timeout=10) as client:
        prediction_id = None
        while prediction_id is None:
            if time.monotonic() - killed_at > timeout_s:
                raise AssertionError(f"no POST accepted within {timeout_s}s of the kill; refused: {refused}")
            try:
                response = client.post("/predictions", json=[{"x": next(_PROBE_X)}])
            except httpx.TransportError as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                _pause.wait(0.05)
                continue
            if response.status_code == 200:
                prediction_id = response.json()["prediction_id"]
                break
            refused[str(response.status_code)] = refused.get(str(response.status_code), 0) + 1
            _pause.wait(0.05)
        first_post_s = time.monotonic() - killed_at
        while True:
            if time.monotonic() - killed_at > timeout_s:
                raise AssertionError(f"prediction {prediction_id} did not succeed within {timeout_s}s of the kill")
            try:
                response = client.get(f"/predictions/{prediction_id}", params={"wait": 5}, timeout=15)
            except httpx.TransportError:
                _pause.wait(0.05)
                continue
            if response.status_code == 200 and response.json()["status"] == "success":
                break
            if response.status_code == 200 and response.json()["status"] == "failed":
                raise AssertionError(f"the probe prediction failed: {response.json()}")
            if response.status_code != 200:
                _pause.wait(0.05)
        first_completed_s = time.monotonic() - killed_at
    watcher.join(timeout_s)
    assert promoted, "the Sentinels named no new primary"
    return Recovery(promoted[0], first_post_s, first_completed_s, refused)
