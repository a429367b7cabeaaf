"""The suite's own network: it leaves nothing behind, and removes what a dead run left."""

from __future__ import annotations

import subprocess

import pytest

from tests.cluster import conftest
from tests.cluster.netns import NETNS_DIR, PREFIX, Network, ip, session_prefix, sweep_stale
from tests.support import wait_for


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    reason = conftest._unavailable()
    if reason:
        pytest.skip(f"the cluster suite needs network namespaces: {reason}")


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_dead_sessions_namespaces_are_swept_with_what_runs_in_them() -> None:
    stale = f"{PREFIX}{_dead_pid()}-1-w1"
    ours = f"{session_prefix()}sweep"
    for name in (stale, ours):
        ip("netns", "add", name)
    left = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "300"])
    try:
        wait_for(lambda: str(left.pid) in ip("netns", "pids", stale).stdout.split(), 10, what="sleep in the namespace")
        assert stale in sweep_stale()
        assert not (NETNS_DIR / stale).exists()
        assert left.wait(10) == -9  # killed, not left running without its namespace
        assert (NETNS_DIR / ours).exists()  # this session's are not stale
    finally:
        left.kill()
        left.wait()
        for name in (stale, ours):
            ip("netns", "del", name, check=False)


def test_destroy_kills_what_runs_inside_and_deletes_every_namespace() -> None:
    network = Network({"solo": {"back": 5}}, delayed="solo").create()
    process = network["solo"].popen(["sleep", "300"])
    names = [network.switch, network["solo"].netns]
    wait_for(lambda: str(process.pid) in ip("netns", "pids", names[1]).stdout.split(), 10, what="sleep in the host")
    assert all((NETNS_DIR / name).exists() for name in names)
    network.destroy()
    assert process.wait(10) != 0
    assert not any((NETNS_DIR / name).exists() for name in names)
    network.destroy()  # twice is harmless (a finaliser and atexit)
