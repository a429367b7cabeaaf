from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sentinel.replicas import SentinelSet


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, one replica and three Sentinels of this test's own; all killed after it."""
    replicated = SentinelSet(tmp_path / "redis", replicas=1)
    try:
        yield replicated.start()
    finally:
        replicated.stop()


@pytest.fixture
def sentinels_2_replicas(tmp_path: Path) -> Iterator[SentinelSet]:
    """The same with two replicas: after a failover the new primary still has one."""
    replicated = SentinelSet(tmp_path / "redis", replicas=2)
    try:
        yield replicated.start()
    finally:
        replicated.stop()
