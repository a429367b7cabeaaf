"""Load for the fault suite: clients submitting predictions while something breaks.

Every input carries a unique integer, so afterwards each accepted prediction can be
checked for the right outputs, and the recorder model's audit file tells how many
times each input ran to the end.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import Server, audit_runs, wait_for

_pause = threading.Event()


@dataclass
class Report:
    scenario: str
    submitted: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    wrong_outputs: int = 0
    duplicated_inputs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "submitted": self.submitted,
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "completed": self.completed,
            "failed_with_reason": dict(self.failed),
            "lost": self.lost,
            "wrong_outputs": self.wrong_outputs,
            "duplicated_inputs": self.duplicated_inputs,
        }


class Load:
    """Closed-loop clients that POST predictions (1–3 inputs each) until stopped."""

    def __init__(self, url: str, clients: int = 4, hold: float = 0.02, pace: float = 0.0) -> None:
        self.url = url
        self.clients = clients
        self.hold = hold
        self.pace = pace
        self.accepted: dict[str, list[int]] = {}
        self.refused: Counter[str] = Counter()
        #: The refused requests: when each was sent (monotonic) and its inputs.
        self.refused_requests: list[tuple[float, list[int]]] = []
        self.submitted = 0
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_accepted(self, count: int, timeout: float = 30) -> None:
        wait_for(lambda: len(self.accepted) >= count, timeout, what=f"{count} accepted predictions")

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                with self._lock:
                    size = 1 + next(self._counter) % 3
                    xs = [next(self._counter) for _ in range(size)]
                    self.submitted += 1
                body = [{"x": x, "hold": self.hold} for x in xs]
                sent_at = time.monotonic()
                try:
                    response = client.post("/predictions", json=body)
                except httpx.TransportError as exc:
                    with self._lock:
                        self.refused[type(exc).__name__] += 1
                        self.refused_requests.append((sent_at, xs))
                    _pause.wait(0.05)  # the API is down: a real client would back off too
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.accepted[response.json()["prediction_id"]] = xs
                    else:
                        self.refused[str(response.status_code)] += 1
                        self.refused_requests.append((sent_at, xs))
                if response.status_code != 200:
                    _pause.wait(0.02)  # told to retry later: a real client would back off
                if self.pace:
                    _pause.wait(self.pace)

    def settle(self, server: Server, scenario: str, audit: Path, timeout: float = 120) -> Report:
        """Wait until every accepted prediction ended; check outputs and duplicates."""
        report = Report(scenario, submitted=self.submitted, accepted=len(self.accepted), refused=self.refused)
        deadline = time.monotonic() + timeout
        for prediction_id, xs in self.accepted.items():
            body = None
            while time.monotonic() < deadline:
                try:
                    response = server.client.get(f"/predictions/{prediction_id}", params={"wait": 10}, timeout=20)
                except httpx.TransportError:
                    _pause.wait(0.2)
                    continue
                if response.status_code == 404:
                    break
                if response.status_code == 200 and response.json()["status"] in ("success", "failed"):
                    body = response.json()
                    break
            if body is None:
                report.lost += 1
            elif body["status"] == "success":
                report.completed += 1
                if [o["x"] for o in body["outputs"]] != xs:
                    report.wrong_outputs += 1
            else:
                report.failed[body["error_message"]] += 1
        done = Counter(x for _pid, run in audit_runs(audit, "done") for x in run)
        report.duplicated_inputs = sum(1 for count in done.values() if count > 1)
        target = os.environ.get("TUNGSTEN_FAULT_REPORT")
        if target:
            with open(target, "a") as out:
                out.write(json.dumps(report.as_dict()) + "\n")
        print(json.dumps(report.as_dict()))
        return report
