"""The soak's report: what was injected, what became of every prediction, what grew."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULTS = (
    "worker-kill",
    "worker-pause",
    "redis-kill",
    "redis-pause",
    "redis-full",
    "api-kill",
    "receiver-down",
)


@dataclass
class SoakReport:
    minutes: float
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    wrong_outputs: int = 0
    duplicated: int = 0
    #: Inputs the workers' metrics count as succeeded beyond those that did (a late
    #: result counted as well as its successor's); a worker killed before its heartbeat
    #: sent its counts can only make the metrics lower.
    counted_twice: int = 0
    false_crash_verdicts: int = 0
    health_checks: int = 0
    health_slow: int = 0
    health_statuses: Counter[str] = field(default_factory=Counter)
    rss_growth: dict[str, float] = field(default_factory=dict)
    rss_processes: dict[str, int] = field(default_factory=dict)
    keys_baseline: int = 0
    keys_end: int = 0
    #: Keys there at the end and not at the baseline (ids masked), for diagnosis.
    keys_added: list[str] = field(default_factory=list)
    memory_baseline: int = 0
    memory_end: int = 0
    workers_index_ok: bool = False
    rq_registries_left: int = 0
    webhooks_delivered: int = 0
    problems: list[str] = field(default_factory=list)
    #: Each lost prediction: why, the faults around it, what Redis still held of it.
    lost_details: list[str] = field(default_factory=list)
    #: Each prediction announced more than once: when, and the faults around it.
    duplicated_details: list[str] = field(default_factory=list)
    #: Each prediction hash left after the result TTL: its fields and expiry.
    leftover_details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()} | {
            "passed": self.passed
        }

    def table(self) -> str:
        faults = ", ".join(f"{k} {self.faults[k]}" for k in FAULTS if self.faults[k]) or "none"
        failed = ", ".join(f"{k} {v}" for k, v in self.failed.most_common()) or "0"
        refused = ", ".join(f"{k} {v}" for k, v in self.refused.most_common()) or "0"
        rss = (
            ", ".join(
                f"{role} {100 * growth:+.1f}% ({self.rss_processes.get(role, 0)} processes)"
                for role, growth in self.rss_growth.items()
            )
            or "no process lived long enough to compare"
        )
        statuses = ", ".join(f"{k} {v}" for k, v in self.health_statuses.most_common())
        rows = [
            ("duration", f"{self.minutes:g} min of load (seed {self.seed})"),
            ("faults injected", f"{sum(self.faults.values())}: {faults}"),
            ("predictions accepted", str(self.accepted)),
            ("succeeded", str(self.succeeded)),
            ("failed, by reason", failed),
            ("refused while faults lasted", refused),
            ("lost", str(self.lost)),
            ("wrong outputs", str(self.wrong_outputs)),
            ("completed twice", str(self.duplicated)),
            ("inputs counted twice in /metrics", str(self.counted_twice)),
            ("false crash verdicts", str(self.false_crash_verdicts)),
            ("/health answers over 1 s", f"{self.health_slow} of {self.health_checks} ({statuses})"),
            ("resident memory after warm-up", rss),
            (
                "Redis keys, baseline -> end",
                f"{self.keys_baseline} -> {self.keys_end}"
                + (f" ({', '.join(self.keys_added)})" if self.keys_added else ""),
            ),
            (
                "Redis used memory, baseline -> end",
                f"{self.memory_baseline / 2**20:.1f} -> {self.memory_end / 2**20:.1f} MiB",
            ),
            ("workers index = live workers", "yes" if self.workers_index_ok else "no"),
            ("RQ registries left", str(self.rq_registries_left)),
            ("webhooks delivered", str(self.webhooks_delivered)),
            ("verdict", "pass" if self.passed else "FAIL: " + "; ".join(self.problems)),
        ]
        rows += [("lost prediction", detail) for detail in self.lost_details[:20]]
        rows += [("completed twice", detail) for detail in self.duplicated_details[:20]]
        rows += [("left in Redis", detail) for detail in self.leftover_details[:20]]
        return "\n".join(["| check | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
