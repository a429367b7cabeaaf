"""`tungsten serve` on a Sentinel-watched Redis whose primary is killed under load.

The API, the workers, the webhook workers (all children of `tungsten serve`, the workers
run as `tungsten worker`) and `tungsten status` reach Redis through the Sentinel URL.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.load import Load
from tests.sentinel.recovery import kill_primary_and_time_recovery
from tests.sentinel.replicas import SentinelSet
from tests.support import MODELS, ServerFactory, record_figures, tungsten, wait_for
from tests.webhooksupport import webhook_receiver

#: The service must be back within the failover's own time plus this (a worker's
#: reconnect backoff, the webhook workers' RQ loop): the issue's "a few seconds".
GRACE_POST_S = 5.0
GRACE_COMPLETED_S = 10.0


def test_the_service_recovers_from_losing_its_primary_under_load(
    sentinels: SentinelSet, serve: ServerFactory, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    serve.redis_url = sentinels.url
    server = serve(
        MODELS / "recorder",
        namespace="failover",
        env={"RECORDER_AUDIT": str(audit), "TUNGSTEN_URL_ALLOWLIST": "127.0.0.1:*"},
    )
    load = Load(server.url, clients=4, hold=0.05, pace=0.2).start()
    try:
        load.wait_accepted(30)
        recovery = kill_primary_and_time_recovery(sentinels, server.url)
        load.wait_accepted(len(load.accepted) + 30, timeout=60)
    finally:
        load.stop()
    record_figures("kill -9 the Sentinel-watched primary (recovery, s)", recovery.as_dict())
    assert recovery.first_post_s <= recovery.failover_s + GRACE_POST_S, recovery
    assert recovery.first_completed_s <= recovery.failover_s + GRACE_COMPLETED_S, recovery
    # While no primary was known, POST answered 503 (with Retry-After), never a 500.
    assert set(recovery.refused) <= {"503"}, recovery

    report = load.settle(server, "kill -9 the Sentinel-watched primary", audit)
    assert report.wrong_outputs == 0, report
    # Asynchronous replication: what the primary accepted in its last moment, before its
    # replica had it, may be gone (GET answers 404); everything else ends.
    assert report.completed + sum(report.failed.values()) + report.lost == report.accepted
    assert not report.failed, report

    # The webhook workers follow the new primary too.
    with webhook_receiver() as receiver:
        response = server.client.post("/predictions", params={"webhook": receiver.url}, json=[{"x": -1000}])
        assert response.status_code == 200
        prediction_id = response.json()["prediction_id"]
        wait_for(lambda: (prediction_id, "completed") in receiver.events(), 30, what="the webhook after the failover")

    # So does `tungsten status` (it asks the Sentinels where the primary is).
    status = tungsten("status", "--redis-url", sentinels.url, "--namespace", "failover", timeout=60)
    assert status.returncode == 0, status.stderr
    assert "failover  (Redis redis+sentinel://***@127.0.0.1:" in status.stdout
    assert "no live workers" not in status.stdout
    assert sentinels.password not in status.stdout + status.stderr


def test_with_wait_no_accepted_prediction_is_lost(
    sentinels_2_replicas: SentinelSet, serve: ServerFactory, tmp_path: Path
) -> None:
    sentinels = sentinels_2_replicas
    audit = tmp_path / "audit.log"
    serve.redis_url = sentinels.url
    server = serve(
        MODELS / "recorder",
        namespace="durable",
        env={"RECORDER_AUDIT": str(audit), "TUNGSTEN_REDIS_WAIT_REPLICAS": "1", "TUNGSTEN_WEBHOOK_WORKERS": "0"},
    )
    load = Load(server.url, clients=4, hold=0.05, pace=0.2).start()
    try:
        load.wait_accepted(30)
        recovery = kill_primary_and_time_recovery(sentinels, server.url)
        load.wait_accepted(len(load.accepted) + 30, timeout=60)
    finally:
        load.stop()
    record_figures("kill -9 the primary, TUNGSTEN_REDIS_WAIT_REPLICAS=1 (recovery, s)", recovery.as_dict())
    assert set(recovery.refused) <= {"503"}, recovery
    # After the failover the new primary needs its remaining replica back before POST
    # can be durable again: allow for that resynchronisation too.
    assert recovery.first_post_s <= recovery.failover_s + GRACE_COMPLETED_S, recovery

    report = load.settle(server, "kill -9 the primary with TUNGSTEN_REDIS_WAIT_REPLICAS=1", audit)
    assert report.lost == 0, report
    assert report.wrong_outputs == 0, report
    # A POST answered 503 because its replicas missed it was canceled; none other failed.
    assert report.completed + sum(report.failed.values()) == report.accepted
    assert not report.failed, report
