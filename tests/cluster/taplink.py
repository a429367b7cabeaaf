"""A link with latency for kernels without ``tc netem``: two TAP devices and this process.

``python -m tests.cluster.taplink SWITCH_NETNS PORT HOST_NETNS INNER`` creates the TAP
device PORT in SWITCH_NETNS and INNER in HOST_NETNS (each opened from a thread inside that
namespace), prints ``ready``, then forwards every Ethernet frame from one to the other
after the delay, in order, as a veth pair with netem on both ends would. Each line on its
standard input sets the one-way delay in milliseconds (``0``: none), answered ``ok``. The
devices vanish
with the process.
"""

from __future__ import annotations

import collections
import fcntl
import os
import struct
import subprocess
import sys
import threading
import time

from tungstenkit._process import die_with_parent

_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_MAX_FRAME = 65536


def open_tap(netns: str, name: str) -> int:
    """A TAP device named ``name`` in ``netns`` (created through a thread inside it)."""
    from tests.cluster.netns import enter

    result: list[int | BaseException] = []

    def create() -> None:
        try:
            enter(netns)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
            result.append(fd)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class Direction:
    """Frames read from one device, written to the other ``delay`` seconds later."""

    def __init__(self, source: int, sink: int, link: DelayedLink) -> None:
        self.source, self.sink, self.link = source, sink, link
        self.frames: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = threading.Condition()

    def read(self) -> None:
        while True:
            frame = os.read(self.source, _MAX_FRAME)
            with self.ready:
                self.frames.append((time.monotonic() + self.link.delay_s, frame))
                self.ready.notify()

    def write(self) -> None:
        while True:
            with self.ready:
                while not self.frames:
                    self.ready.wait()
                due, frame = self.frames.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the link's latency itself
            try:
                os.write(self.sink, frame)
            except OSError:
                pass  # the device is down (a cut link): the frame is lost, as on a wire


class DelayedLink:
    def __init__(self, a: int, b: int) -> None:
        self.delay_s = 0.0
        self.directions = [Direction(a, b, self), Direction(b, a, self)]

    def run(self) -> None:
        for direction in self.directions:
            for target in (direction.read, direction.write):
                threading.Thread(target=target, daemon=True).start()
        for line in sys.stdin:
            self.delay_s = float(line) / 1000
            print("ok", flush=True)


def start_taplink(switch_netns: str, port: str, host_netns: str, inner: str) -> subprocess.Popen[str]:
    """Start the link's process; return once both devices exist."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.taplink", switch_netns, port, host_netns, inner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - the link must not outlive the suite
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        process.wait()
        raise OSError(f"the TAP link did not start: {line.strip() or 'no output'}")
    return process


def set_taplink_delay(process: subprocess.Popen[str], one_way_ms: float) -> None:
    """Set the delay of the link, each way; returns once the link applies it."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{one_way_ms}\n")
    process.stdin.flush()
    if process.stdout.readline().strip() != "ok":
        raise OSError("the TAP link did not take the new delay")


def main() -> None:
    switch_netns, port, host_netns, inner = sys.argv[1:5]
    a, b = open_tap(switch_netns, port), open_tap(host_netns, inner)
    print("ready", flush=True)
    DelayedLink(a, b).run()


if __name__ == "__main__":
    main()
