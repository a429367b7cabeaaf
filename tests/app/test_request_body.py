"""Reading request bodies: the media type, the JSON shape checked while a body arrives, the
process's budget of body bytes, and validation off the event loop. Against a real
`tungsten serve`, over raw sockets where the point is what happens before a body is whole."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import MODELS, Server, ServerFactory, api_pid, connect, head, memory_mib, read_response, wait_for

LIMITS = {
    "TUNGSTEN_MAX_INPUTS_PER_REQUEST": "16",
    "TUNGSTEN_MAX_BODY_BYTES": "40000000",
    "TUNGSTEN_MAX_BUFFERED_BYTES": "40000000",
}


@pytest.fixture(scope="module")
def server(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "recorder", env=LIMITS, workers=0)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
@pytest.mark.parametrize("path", ["/predictions", "/predict"])
def test_a_body_not_declared_as_json_is_415(server: Server, path: str, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = server.client.post(path, content=b'[{"x": 1}]', headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]


def test_json_with_a_charset_is_accepted(server: Server) -> None:
    response = server.client.post(
        "/predictions", content=b'[{"x": 1}]', headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 200


def test_too_many_inputs_are_refused_before_the_body_is_whole(server: Server) -> None:
    length = 30_000_000  # a declared 30 MB of [{},{},...], of which 1 MB is sent
    with connect(server) as sock:
        sock.sendall(head("POST", "/predictions", length) + b"[" + b"{}," * 333_333)
        status, _, body = read_response(sock)
    assert status == 422
    assert body["detail"] == [{"loc": ["body"], "msg": "At most 16 inputs per request, got more", "type": "too_long"}]


def test_nesting_too_deep_is_refused_before_the_body_is_whole(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(head("POST", "/predictions", 1_000_000) + b"[" * 100_000)
        status, _, body = read_response(sock)
    assert status == 400
    assert "deeper than 32 levels" in body["detail"]


def test_too_many_values_inside_one_input_are_refused(server: Server) -> None:
    body = json.dumps([{"x": 1, "ignored": list(range(100_000))}]).encode()
    response = server.client.post("/predictions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "more JSON values than 16 inputs can" in response.json()["detail"][0]["msg"]


def test_a_body_of_millions_of_objects_does_not_build_them(server: Server) -> None:
    pid = api_pid(server)
    peak_before = memory_mib(pid, "VmHWM")
    body = b"[" + b"{}," * 6_000_000 + b"{}]"  # 18 MB: 6 million dicts, some 500 MB, if parsed
    response = server.client.post("/predictions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert memory_mib(pid, "VmHWM") - peak_before < 64


def test_large_valid_bodies_are_read_and_checked_across_chunks(server: Server) -> None:
    # Strings with escapes and structural characters inside, split across many chunks.
    text = ('a "quoted" [list], {object}, back\\slash ' * 20_000)[:600_000]
    inputs = [{"x": i, "group": text} for i in range(16)]
    response = server.client.post("/predictions", json=inputs)
    assert response.status_code == 200, response.text
    too_many = [{"x": i, "group": text[:10_000]} for i in range(17)]
    response = server.client.post("/predictions", json=too_many)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_long"


def test_bodies_past_the_process_budget_get_503_and_small_ones_still_pass(module_serve: ServerFactory) -> None:
    budget = {"TUNGSTEN_MAX_BODY_BYTES": "300000", "TUNGSTEN_MAX_BUFFERED_BYTES": "450000"}
    server = module_serve(MODELS / "recorder", env=budget, workers=0)
    big = json.dumps([{"x": 1, "group": "p" * 280_000}]).encode()
    holders = []
    try:
        for _ in range(2):  # two clients hold most of a big body: 2 x 215 KB counted (past the first 64 KiB) of 450 KB
            holder = connect(server)
            holder.sendall(head("POST", "/predictions", len(big)) + big[:-1])
            holders.append(holder)

        def refused() -> tuple[int, dict[str, str], Any] | None:
            # A probe declares a big body and sends none of it: it takes nothing from the budget.
            with connect(server, timeout=0.5) as probe:
                probe.sendall(head("POST", "/predictions", len(big)))
                try:
                    return read_response(probe)
                except TimeoutError:
                    return None  # waiting for the body: there was room for it

        status, headers, detail = wait_for(refused, 20, what="a third big body to be refused")
        assert status == 503 and headers["retry-after"] == "1"
        assert "bytes of request bodies" in detail["detail"]
        assert server.client.post("/predictions", json=[{"x": 2}]).status_code == 200  # small bodies pass
        for holder in holders:
            holder.sendall(big[-1:])
            assert read_response(holder)[0] == 200
        assert (
            server.client.post("/predictions", content=big, headers={"Content-Type": "application/json"}).status_code
            == 200
        )
    finally:
        for holder in holders:
            holder.close()


def test_small_requests_are_served_while_a_large_body_is_validated(module_serve: ServerFactory, tmp_path: Path) -> None:
    server = module_serve(MODELS / "slow_validation", workers=0)
    gate = tmp_path / "gate"
    large = [{"text": "t" * 100_000, "gate": str(gate)}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(server.client.post, "/predictions", json=large)
        wait_for((tmp_path / "gate.entered").exists, 20, what="the large body to be in validation")
        # Validation is held: the event loop must not be.
        assert server.client.get("/", timeout=5).status_code == 200
        assert server.client.post("/predictions", json=[{"text": "small"}], timeout=5).status_code == 200
        gate.touch()
        assert held.result(30).status_code == 200
