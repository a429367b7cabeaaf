"""A small network of hosts on this machine, built from network namespaces.

Each host is a network namespace; a ``switch`` namespace holds two bridges, ``front``
(clients and the API) and ``back`` (the API, the workers and Redis), and every host has
one veth pair per network it is on, its end called ``eth0`` (``eth1`` for a second one).
The addresses, ``10.213.0.0/24`` in front and ``10.213.1.0/24`` behind, exist only inside
these namespaces: the machine's own network is never touched.

Names start with ``tungsten-cl-<pid>-<start time>-`` of the session that made them, so
a parallel run never meets them, and a later session recognises and removes what a
crashed one left behind (``sweep_stale``). ``Network.destroy`` kills every process still
inside its namespaces and deletes them; it runs from fixture finalisers and at exit.

Processes run in a host through ``ip netns exec`` (``Host.popen``); code of the test
itself reaches a host's network from threads that entered its namespace (``Host.run``:
a thread's network namespace is its own, and threads it starts inherit it).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tungstenkit._process import die_with_parent

T = TypeVar("T")

PREFIX = "tungsten-cl-"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: The two networks: bridge name -> the /24 its hosts are on.
NETWORKS = {"front": "10.213.0", "back": "10.213.1"}


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def session_prefix() -> str:
    """This process's prefix: its pid and start time (a reused pid has another)."""
    return f"{PREFIX}{os.getpid()}-{_start_ticks(os.getpid())}-"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its message when it fails (and ``check``)."""
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def enter(netns: str) -> None:
    """Move the calling thread into the network namespace ``netns``."""
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {netns}: {os.strerror(error)}")
    finally:
        os.close(fd)


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster suite (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (the cluster suite runs as root, as .ci/run does)"
    probe = f"{session_prefix()}probe"
    try:
        ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        ip("-n", probe, "link", "add", "probebr", "type", "bridge")
    except OSError as exc:
        return f"cannot create veth pairs or bridges in a network namespace: {exc}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


class NoLatency(OSError):
    """This machine can give a link no latency: no ``tc netem``, and no TUN device."""


def netem_available(netns: str) -> bool:
    """Whether the kernel has ``tc``'s netem (``sch_netem``) for links in ``netns``."""
    ip("-n", netns, "link", "add", "netemprobe", "type", "dummy", check=False)
    try:
        done = subprocess.run(
            ["tc", "-n", netns, "qdisc", "add", "dev", "netemprobe", "root", "netem", "delay", "1ms"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0
    except OSError:
        return False
    finally:
        ip("-n", netns, "link", "del", "netemprobe", check=False)


def kill_inside(netns: str) -> None:
    """SIGKILL every process left inside ``netns`` (all of them were started by the suite)."""
    done = ip("netns", "pids", netns, check=False)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_namespace(netns: str) -> None:
    kill_inside(netns)
    ip("netns", "del", netns, check=False)


def sweep_stale() -> list[str]:
    """Delete the namespaces of sessions that are gone (a run killed before its cleanup)."""
    removed = []
    for path in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.is_dir() else []:
        try:
            pid, ticks = path.name[len(PREFIX) :].split("-")[:2]
        except ValueError:
            continue
        if not pid.isdigit() or _start_ticks(int(pid)) != ticks:
            delete_namespace(path.name)
            removed.append(path.name)
    return removed


@dataclass
class Host:
    """One host: a network namespace and its addresses (by network)."""

    name: str
    netns: str
    addresses: dict[str, str]
    _pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def address(self, network: str = "back") -> str:
        return self.addresses[network]

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Call ``fn`` on a thread inside this host's network namespace."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=16, thread_name_prefix=f"netns-{self.name}", initializer=enter, initargs=(self.netns,)
                )
            return self._pool.submit(fn, *args, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``run`` and wait for the result (its exception raised here)."""
        return self.run(fn, *args, **kwargs).result()

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` in this host. It gets SIGTERM if the test process dies
        (so call this from the main thread: the signal follows the thread that started it)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *command],
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the child must not outlive the suite
            start_new_session=True,
            **kwargs,
        )

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class Network:
    """The switch and the hosts. ``hosts`` maps a host's name to {network: last octet}.

    The link of ``delayed`` (a host on the back network) can be given latency
    (``set_delay``): with ``tc netem`` where the kernel has it, else through a userspace
    link (``tests.cluster.taplink``: two TAP devices and a process that forwards frames
    between them after the delay).
    """

    def __init__(self, hosts: dict[str, dict[str, int]], delayed: str | None = None) -> None:
        self.prefix = session_prefix()
        self.switch = self.prefix + "switch"
        self.hosts: dict[str, Host] = {}
        self.delayed = delayed
        self.delay_mechanism = ""
        self._specs = hosts
        self._taplink: subprocess.Popen[str] | None = None
        self._destroyed = False

    # -- building ----------------------------------------------------------------------
    def create(self) -> Network:
        atexit.register(self.destroy)
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        for bridge in NETWORKS:
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "up")
        for name, networks in self._specs.items():
            host = Host(name, self.prefix + name, {net: f"{NETWORKS[net]}.{octet}" for net, octet in networks.items()})
            ip("netns", "add", host.netns)
            self.hosts[name] = host
            ip("-n", host.netns, "link", "set", "lo", "up")
            for index, network in enumerate(networks):
                inner, port = f"eth{index}", self.port(name, network)
                if name == self.delayed and network == "back":
                    self._delayed_link(host, port, inner)
                else:
                    ip(
                        "-n",
                        self.switch,
                        "link",
                        "add",
                        port,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        inner,
                        "netns",
                        host.netns,
                    )
                ip("-n", self.switch, "link", "set", port, "master", network)
                ip("-n", self.switch, "link", "set", port, "up")
                ip("-n", host.netns, "addr", "add", f"{host.addresses[network]}/24", "dev", inner)
                ip("-n", host.netns, "link", "set", inner, "up")

    def _delayed_link(self, host: Host, port: str, inner: str) -> None:
        if netem_available(self.switch):
            self.delay_mechanism = "tc netem"
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", inner, "netns", host.netns)
            return
        if not Path("/dev/net/tun").exists():
            raise NoLatency("the kernel has no sch_netem for tc netem, and /dev/net/tun is absent for a TAP link")
        self.delay_mechanism = "userspace TAP link (this kernel has no sch_netem)"
        from tests.cluster.taplink import start_taplink

        self._taplink = start_taplink(self.switch, port, host.netns, inner)

    @staticmethod
    def port(host: str, network: str) -> str:
        """The switch's end of ``host``'s link to ``network`` (``w1-back``)."""
        return f"{host}-{network}"[:15]

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # -- faults ------------------------------------------------------------------------
    def cut(self, host: str, network: str = "back") -> float:
        """Take the switch port of ``host`` on ``network`` down (the cable is pulled: both
        ends lose carrier, and what is sent is lost). Returns when it happened (monotonic)."""
        ip("-n", self.switch, "link", "set", self.port(host, network), "down")
        return time.monotonic()

    def restore(self, host: str, network: str = "back") -> float:
        ip("-n", self.switch, "link", "set", self.port(host, network), "up")
        return time.monotonic()

    def set_delay(self, one_way_ms: float) -> None:
        """Delay every frame crossing the delayed host's link by ``one_way_ms``, each way
        (the round trip grows by twice that); 0 removes the delay."""
        assert self.delayed is not None, "this network has no delayed link"
        if self._taplink is not None:
            from tests.cluster.taplink import set_taplink_delay

            set_taplink_delay(self._taplink, one_way_ms)
            return
        host = self.hosts[self.delayed]
        for netns, dev in ((self.switch, self.port(self.delayed, "back")), (host.netns, "eth0")):
            if one_way_ms:
                command = [
                    "tc",
                    "-n",
                    netns,
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "netem",
                    "delay",
                    f"{one_way_ms}ms",
                ]
            else:
                command = ["tc", "-n", netns, "qdisc", "del", "dev", dev, "root"]
            subprocess.run(command, capture_output=True, timeout=30, check=bool(one_way_ms))

    # -- cleaning up -------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill what runs inside, then delete every namespace (links and bridges go with
        them). Safe to call twice."""
        if self._destroyed:
            return
        self._destroyed = True
        for host in self.hosts.values():
            host.close()
        if self._taplink is not None:
            if self._taplink.poll() is None:
                self._taplink.kill()
                self._taplink.wait()
            for stream in (self._taplink.stdin, self._taplink.stdout):
                if stream is not None:
                    stream.close()
        for host in self.hosts.values():
            delete_namespace(host.netns)
        delete_namespace(self.switch)
        atexit.unregister(self.destroy)
