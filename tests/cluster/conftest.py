from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.hosts import Cluster
from tests.cluster.netns import Network, NoLatency, sweep_stale, unavailable_reason

#: The hosts: name -> {network: last octet of its address there}.
HOSTS = {
    "client": {"front": 100},
    "api": {"front": 2, "back": 2},
    "redis": {"back": 1},
    "w1": {"back": 11},
    "w2": {"back": 12},
}


@functools.cache
def _unavailable() -> str | None:
    sweep_stale()  # what a run killed before its cleanup left behind
    return unavailable_reason()


def build_network(delayed: str | None = None) -> Iterator[Network]:
    reason = _unavailable()
    if reason:
        pytest.skip(f"the cluster suite needs network namespaces: {reason}")
    try:
        network = Network(HOSTS, delayed=delayed).create()
    except NoLatency as exc:
        pytest.skip(f"cannot give the Redis link latency here: {exc}")
    try:
        yield network
    finally:
        network.destroy()


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """The hosts, on their two networks; deleted (with what runs in them) after the module."""
    yield from build_network()


@pytest.fixture(scope="module")
def delayed_network() -> Iterator[Network]:
    """The same, with a Redis link that can be given latency (``Network.set_delay``)."""
    yield from build_network(delayed="redis")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Makes the test's cluster (its own Redis, API and workers, in a Redis namespace of
    its own) on a network; everything it started is stopped after the test."""
    made: list[Cluster] = []

    def make(network: Network, env: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(network, tmp_path, f"cl{uuid.uuid4().hex[:8]}", env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
