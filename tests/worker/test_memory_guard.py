"""A worker's memory bound (TUNGSTEN_WORKER_MAX_MEMORY_MB), through the running server."""

from __future__ import annotations

from tests.support import MODELS, ServerFactory, wait_for


def test_a_batch_past_the_memory_bound_fails_alone_and_the_worker_is_replaced(serve: ServerFactory) -> None:
    server = serve(MODELS / "memory_hog", env={"TUNGSTEN_WORKER_MAX_MEMORY_MB": "400"})
    assert server.predict([{"mb": 16}])["status"] == "success"
    first_pid = server.client.get("/health").json()["workers"][0]["pid"]
    # A prediction that wants 4 GB, and one queued behind it on the same (only) worker.
    hog = server.client.post("/predictions", json=[{"mb": 4000}]).json()["prediction_id"]
    behind = server.client.post("/predictions", json=[{"mb": 8}]).json()["prediction_id"]
    failed = server.result(hog)
    assert failed["status"] == "failed"
    assert failed["error_message"] == (
        "MemoryLimitExceeded: the worker running this input used more than 400 MB "
        "(TUNGSTEN_WORKER_MAX_MEMORY_MB) and was replaced"
    )
    # Nothing else is hurt: the prediction behind it runs on the worker that replaced it.
    assert server.result(behind, wait=60)["status"] == "success"
    workers = server.client.get("/health").json()["workers"]
    assert [w["pid"] for w in workers] != [first_pid]
    exited = "exited with code 8 (it used more memory than TUNGSTEN_WORKER_MAX_MEMORY_MB); restarting"
    wait_for(lambda: exited in server.log(), 10, what="the supervisor to log the exit")
    assert "more than TUNGSTEN_WORKER_MAX_MEMORY_MB (400); failing its batch and replacing it" in server.log()
    assert "Traceback" not in server.log()


def test_a_model_that_needs_more_than_the_bound_after_setup_stops_serve_with_the_reason(serve: ServerFactory) -> None:
    server = serve(MODELS / "memory_hog", env={"TUNGSTEN_WORKER_MAX_MEMORY_MB": "10"}, ready=False)
    wait_for(lambda: server.process.poll() is not None, 60, what="serve to stop")
    assert server.process.returncode != 0
    assert "more than TUNGSTEN_WORKER_MAX_MEMORY_MB (10)" in server.log()
