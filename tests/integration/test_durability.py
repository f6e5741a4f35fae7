"""Acknowledged conversions survive crashes: workers and Redis killed with SIGKILL for real."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import WorkerProcess
from tests.standins.refcampaign import RefCampaign, Scripted
from tests.waiting import wait_until

# What Celery's consumer logs each time it has connected to the broker.
CONNECTED = "Connected to redis://"


def wait_requests(refcampaign: RefCampaign, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(refcampaign.requests) < count:
        assert time.monotonic() < deadline, f"{len(refcampaign.requests)} of {count} requests"
        time.sleep(0.05)


def test_worker_killed_mid_request_delivers_after_restart(client, env, tmp_path, refcampaign):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.script(Scripted(status=None, delay=3.0))  # answered, but too late for the worker
    assert post(client, checkout_event("cs_test_killed_mid")).status_code == 200
    wait_requests(refcampaign, 1)
    worker.kill()
    worker.start()
    try:
        # The lease of the killed attempt runs out (2 × DELIVERY_TIMEOUT + 10 s), then it resumes.
        wait_requests(refcampaign, 2, timeout=40)
        assert [r["body"] for r in refcampaign.requests][0] == refcampaign.requests[1]["body"]
        assert len(refcampaign.accepted) == 1
    finally:
        worker.stop()


def test_worker_killed_between_retries_resumes(client, env, tmp_path, refcampaign):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.script(Scripted(503))
    assert post(client, checkout_event("cs_test_between")).status_code == 200
    wait_requests(refcampaign, 1)
    worker.kill()
    time.sleep(1.5)  # the retry falls due while no worker runs
    worker.start()
    try:
        refcampaign.wait_for(1, timeout=20)
    finally:
        worker.stop()


def test_redis_killed_and_restarted_from_aof_loses_nothing(
    client, env, tmp_path, refcampaign, redis_server: EmbeddedRedis
):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.default = Scripted(503)
    try:
        for n in range(20):
            assert post(client, checkout_event(f"cs_test_aof_{n}")).status_code == 200
        wait_requests(refcampaign, 5)
        redis_server.kill()
        body = client.post("/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "x"})
        assert body.status_code == 400  # a bad signature is refused before Redis is touched
        # Refused, so that Stripe sends it again (how soon: test_redis_killed_is_503_at_once).
        assert post(client, checkout_event("cs_test_while_down")).status_code == 503
        redis_server.start()
        refcampaign.default = None
        delivered = refcampaign.wait_for(20, timeout=60)
        assert sorted(p["externalId"] for p in delivered) == sorted(
            f"cs_test_aof_{n}" for n in range(20)
        )
        assert worker.proc is not None and worker.proc.poll() is None, "worker died with Redis"
        assert post(client, checkout_event("cs_test_after_restart")).status_code == 200
        refcampaign.wait_for(21, timeout=20)
    finally:
        worker.stop()


@pytest.mark.alone  # times the answer: run with nothing else running (the `alone` marker)
def test_redis_killed_is_503_at_once(client, redis_server: EmbeddedRedis):
    """The web's connections to Redis die with it: a webhook is refused at once all the same,
    not after reconnection attempts or a socket timeout."""
    fastest = float("inf")
    try:
        for n in range(3):  # the best of three: a loaded machine only ever makes one slower
            # Accepted: the web holds a connection to Redis, which dies under it.
            assert post(client, checkout_event(f"cs_test_before_kill_{n}")).status_code == 200
            redis_server.kill()
            started = time.monotonic()
            assert post(client, checkout_event(f"cs_test_while_down_{n}")).status_code == 503
            fastest = min(fastest, time.monotonic() - started)
            redis_server.start()
            if fastest < 5:
                break
    finally:
        if redis_server.process is None or redis_server.process.poll() is not None:
            redis_server.start()
    assert fastest < 5, f"{fastest:.1f}s"


def test_hundreds_in_flight_survive_random_kills(
    client, env, tmp_path: Path, refcampaign, redis_server: EmbeddedRedis
):
    """Kill worker and Redis at random moments; every order lands once."""
    rng = random.Random(4)
    worker = WorkerProcess(env, tmp_path / "w.log", concurrency=4).start()
    refcampaign.default = Scripted(status=None, delay=0.01)
    total, acked = 300, []
    try:
        for n in range(total):
            event = checkout_event(f"cs_test_soak_{n}")
            response = _post_until_acked(client, event)
            acked.append(event["data"]["object"]["id"])
            assert response.status_code == 200
            if n in (60, 180):
                worker.kill()
                worker.start()
            if n == 120:
                redis_server.kill()
                time.sleep(rng.uniform(0.1, 0.5))
                redis_server.start()
            if n == 240:
                worker.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                worker.start()
        delivered = refcampaign.wait_for(total, timeout=120)
        assert sorted(p["externalId"] for p in delivered) == sorted(acked)
        assert len({p["externalId"] for p in delivered}) == total
        client_redis = redis.Redis.from_url(env["REDIS_URL"])
        assert client_redis.zcard("rb:dlq") == 0
    finally:
        worker.stop()


def _post_until_acked(client: Any, event: dict[str, Any]) -> Any:
    for _ in range(50):
        response = post(client, event)
        if response.status_code != 503:
            return response
        time.sleep(0.1)  # Redis is restarting: the provider would resend
    return response


def test_worker_survives_redis_restart_with_a_task_in_flight(
    client, env, tmp_path, refcampaign, redis_server: EmbeddedRedis
):
    """Celery 5.7.0 + kombu 5.7.0 exit here ('NoneType' has no attribute 'hostname'): the pin."""
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.script(Scripted(status=None, delay=2.0))
    try:
        assert post(client, checkout_event("cs_test_in_flight")).status_code == 200
        wait_requests(refcampaign, 1)
        redis_server.kill()
        time.sleep(0.5)
        redis_server.start()
        refcampaign.wait_for(1)
        # The consumer notices the lost connection and connects again: the moment 5.7.0 exits.
        assert worker.proc is not None
        wait_until(
            lambda: worker.output().count(CONNECTED) >= 2 or worker.proc.poll() is not None,
            30,
            "the worker to connect to Redis again",
        )
        assert worker.proc.poll() is None, worker.output()[-2000:]
        assert post(client, checkout_event("cs_test_after_in_flight")).status_code == 200
        refcampaign.wait_for(2, timeout=30)
    finally:
        worker.stop()


def test_attempt_that_cannot_be_recorded_with_redis_down_is_tried_again(
    client, env, tmp_path, refcampaign, redis_server: EmbeddedRedis
):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.script(Scripted(status=None, delay=1.5))  # delivered, once Redis has gone
    try:
        assert post(client, checkout_event("cs_test_unrecorded")).status_code == 200
        wait_requests(refcampaign, 1)
        redis_server.kill()
        # The delivery cannot be written down; it is not turned into a failure either.
        deadline = time.monotonic() + 15
        while "attempt_not_recorded" not in worker.output():
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.1)
        redis_server.start()
        # The claim's lease (2 × DELIVERY_TIMEOUT + 10 s) runs out and the item is tried again.
        wait_requests(refcampaign, 2, timeout=40)
        ledger = Ledger(redis.Redis.from_url(redis_server.url))
        deadline = time.monotonic() + 10
        while (ledger.get("cs_test_unrecorded") or {}).get("status") != "delivered":
            assert time.monotonic() < deadline, ledger.get("cs_test_unrecorded")
            time.sleep(0.1)
        assert [r["body"] for r in refcampaign.requests][0] == refcampaign.requests[1]["body"]
        assert '"outcome":"unrecorded"' in worker.output()
        assert "attempt_crashed" not in worker.output()
    finally:
        worker.stop()
