"""A short soak-and-chaos run (about 3 minutes): `tungsten serve` with 2 workers and 2 API
processes under mixed load, a fault every few seconds; see ``bench/soak.py``, which runs
the same for as long as you like (``python -m bench.soak --minutes 60``)."""

from __future__ import annotations

import os

import pytest

from bench.soak import run


@pytest.mark.timeout(900)
def test_nothing_is_lost_duplicated_or_wrongly_failed_and_nothing_grows() -> None:
    minutes = float(os.environ.get("TUNGSTEN_SOAK_MINUTES", "1.8"))
    seed = int(os.environ["TUNGSTEN_SOAK_SEED"]) if "TUNGSTEN_SOAK_SEED" in os.environ else None
    report = run(minutes, seed)
    print(report.table())
    assert report.passed, report.table()
