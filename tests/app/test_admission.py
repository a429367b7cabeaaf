"""Admission: past ``max_connections`` requests in progress, a request gets 503 with
Retry-After in the API's error shape (uvicorn's own limit answered in plain text, and also
counted idle connections)."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.support import MODELS, ServerFactory, wait_for


def test_requests_past_the_limit_in_progress_get_503_with_retry_after(serve: ServerFactory) -> None:
    server = serve(MODELS / "recorder", env={"TUNGSTEN_MAX_CONNECTIONS": "2"}, workers=0)
    prediction_id = server.client.post("/predictions", json=[{"x": 1}]).json()["prediction_id"]

    def long_poll() -> int:
        # Pending for good (no worker): each holds a request in progress for 10 s.
        for _ in range(5):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                try:
                    return client.get(f"/predictions/{prediction_id}", params={"wait": 10}).status_code
                except httpx.RemoteProtocolError:
                    continue  # it gave way before sending its head (see refused): again
        return 0

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        polls = [pool.submit(long_poll) for _ in range(2)]

        def refused() -> httpx.Response | None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                try:
                    response = client.get("/")
                except httpx.RemoteProtocolError:
                    # Its connection opened before a long poll's and sent no head yet when
                    # that one came: past TUNGSTEN_MAX_CONNECTIONS connections, the one
                    # waiting longest for a head gives way (a slot rule, not this test's).
                    return None
            return response if response.status_code == 503 else None

        response = wait_for(refused, 8, what="a third request to be refused")
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"detail": "2 requests are in progress; retry shortly"}
        assert [poll.result() for poll in polls] == [200, 200]
    assert server.client.get("/").status_code == 200
