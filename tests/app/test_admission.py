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
        # Pending for good (no worker): each holds a request in progress for 5 s.
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.get(f"/predictions/{prediction_id}", params={"wait": 5}).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        polls = [pool.submit(long_poll) for _ in range(2)]

        def refused() -> httpx.Response | None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                response = client.get("/")
            return response if response.status_code == 503 else None

        response = wait_for(refused, 5, what="a third request to be refused")
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"detail": "2 requests are in progress; retry shortly"}
        assert [poll.result() for poll in polls] == [200, 200]
    assert server.client.get("/").status_code == 200
