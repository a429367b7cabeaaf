"""The HTTP protocol's guards against slow and huge clients, over raw sockets to a real
`tungsten serve` (limits set low through settings so that the tests stay quick)."""

from __future__ import annotations

import json
import threading

import pytest

from tests.support import (
    MODELS,
    Server,
    ServerFactory,
    api_pid,
    closed_by_peer,
    connect,
    head,
    memory_mib,
    pace,
    read_response,
    wait_for,
)

QUICK = {
    "TUNGSTEN_HEADER_TIMEOUT_S": "1",
    "TUNGSTEN_MAX_HEADER_BYTES": "4096",
    "TUNGSTEN_BODY_TIMEOUT_S": "1",
    "TUNGSTEN_MIN_BODY_BYTES_PER_S": "2000",
}
HALF_A_HEAD = b"POST /predictions HTTP/1.1\r\nHost: test\r\n"


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "recorder", env=QUICK, workers=0)


def test_a_head_that_never_ends_is_answered_408_and_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(HALF_A_HEAD)
        status, _, body = read_response(sock)
        assert status == 408
        assert "No complete request head within 1s" in body["detail"]
        assert closed_by_peer(sock, 5)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert closed_by_peer(sock, 10)


def test_a_head_over_the_size_limit_is_431(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 5000 + b"\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 431
        assert "exceed 4096 bytes" in body["detail"]
        assert closed_by_peer(sock, 5)
    with connect(server) as sock:  # one under the limit is served
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 3000 + b"\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_endless_headers_are_cut_off_before_they_grow_the_api(server: Server) -> None:
    pid = api_pid(server)
    peak_before = memory_mib(pid, "VmHWM")
    accepted: list[int] = []

    def flood() -> None:
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Endless: ")
            sent = 0
            try:
                while sent < 16 * 2**20:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass  # cut off
            accepted.append(sent)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(accepted) == 4
    assert max(accepted) < 4 * 2**20, accepted  # the socket buffers hold a few MB; the API none of it
    assert memory_mib(pid, "VmHWM") - peak_before < 16


def _trickle(sock: object, piece: bytes) -> bool:
    """Send one piece of a slow body; True once the server has closed the connection."""
    try:
        sock.sendall(piece)  # type: ignore[attr-defined]
    except OSError:
        return True
    return closed_by_peer(sock, 0.2)  # type: ignore[arg-type]


def test_a_body_slower_than_the_minimum_rate_is_cut_off(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(head("POST", "/predictions", 100_000))
        # 10 bytes per 0.2 s is 50 bytes/s, against a minimum of 2,000 after 1 s.
        wait_for(lambda: _trickle(sock, b" " * 10), 15, what="the server to drop the slow body")


def test_a_body_that_keeps_up_with_the_minimum_rate_is_read(server: Server) -> None:
    body = json.dumps([{"x": 1, "group": "p" * 5900}]).encode()
    with connect(server) as sock:
        sock.sendall(head("POST", "/predictions", len(body)))
        for start in range(0, len(body), 600):  # about 6,000 bytes/s
            pace(0.1)
            sock.sendall(body[start : start + 600])
        status, _, answer = read_response(sock)
        assert status == 200, answer
        assert "prediction_id" in answer


def test_clients_that_send_half_a_head_do_not_lock_others_out(module_serve: ServerFactory) -> None:
    server = module_serve(
        MODELS / "recorder", env={"TUNGSTEN_MAX_CONNECTIONS": "8", "TUNGSTEN_HEADER_TIMEOUT_S": "60"}, workers=0
    )
    holders = []
    try:
        for _ in range(16):
            holder = connect(server)
            holder.sendall(HALF_A_HEAD)
            holders.append(holder)
        for _ in range(3):  # every slot was taken by a slow head: new clients are still served
            with connect(server) as sock:
                sock.sendall(head("GET", "/"))
                status, _, body = read_response(sock)
                assert status == 200, body
        closed = [closed_by_peer(holder, 0.5) for holder in holders]
        assert sum(closed) >= 8  # those over the limit gave way, the longest-waiting first
        assert closed[0] and not closed[-1]
    finally:
        for holder in holders:
            holder.close()


def test_a_kept_alive_connection_after_a_large_body_is_not_taken_for_a_huge_head(server: Server) -> None:
    body = json.dumps([{"x": 1, "group": "p" * 300_000}]).encode()  # far over the 4096-byte head limit
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(head("POST", "/predictions", len(body)) + body)
            status, _, answer = read_response(sock)
            assert status == 200, answer
        sock.sendall(head("GET", "/"))
        assert read_response(sock)[0] == 200
