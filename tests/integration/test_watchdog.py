"""A worker whose consumer stops taking tasks recovers by itself: the watchdog, for real.

The test plays the supervisor (`refbridge run`, systemd, the platform): when the worker exits
it checks the status is non-zero and starts it again, and sends no other command.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from bridge.ops.embedded_redis import EmbeddedRedis
from tasks.watchdog import CHECK_EVERY, EXIT_STUCK, STALL
from tests.integration.test_observability import samples
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import ROOT, WorkerProcess
from tests.standins.refcampaign import RefCampaign, Scripted

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")


def celery_control(env: dict[str, str], *args: str) -> str:
    """`celery -A celery_app control ARGS…`, as an operator (or Celery itself) would send it."""
    cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "control", *args]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def supervise_until(
    worker: WorkerProcess, refcampaign: RefCampaign, count: int, timeout: float
) -> list[int]:
    """Restart `worker` whenever it exits until `count` conversions arrived; the exit statuses."""
    exits: list[int] = []
    deadline = time.monotonic() + timeout
    while len(refcampaign.accepted) < count:
        assert time.monotonic() < deadline, (
            f"{len(refcampaign.accepted)} of {count} delivered\n{worker.output()[-3000:]}"
        )
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            exits.append(worker.proc.returncode)
            worker.start()
        time.sleep(0.2)
    return exits


def stuck_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.output().splitlines() if '"event":"consumer_stuck"' in line]


def test_worker_that_stopped_consuming_recovers_by_itself(client, env, tmp_path, refcampaign):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    try:
        assert "no longer consuming from refbridge" in celery_control(
            env, "cancel_consumer", "refbridge"
        )
        ids = [f"cs_test_stuck_{n}" for n in range(5)]
        for external_id in ids:
            assert post(client, checkout_event(external_id)).status_code == 200
        exits = supervise_until(worker, refcampaign, len(ids), timeout=90)
        assert sorted(p["externalId"] for p in refcampaign.accepted) == ids
        assert exits == [EXIT_STUCK]
        [line] = stuck_lines(worker)
        for seen in (
            '"queued_tasks":5',
            '"seconds_since_last_task":',
            '"pool_idle":true',
        ):
            assert seen in line, line
        # Counted where on-call looks: /metrics and `refbridge status`.
        metrics = samples(client.get("/metrics").get_data(as_text=True))
        assert metrics[("refbridge_worker_events_total", (("outcome", "consumer_stuck"),))] == 1
        status = subprocess.run(
            [REFBRIDGE, "status"], env=env, capture_output=True, text=True, timeout=30
        )
        assert "consumer stuck" in status.stdout and status.returncode == 0, status.stderr
        [row] = [r for r in status.stdout.splitlines() if "consumer stuck" in r]
        assert row.split()[-1] == "1"
    finally:
        worker.stop()


def test_redis_restarted_under_load_everything_is_delivered(
    client, env, tmp_path, refcampaign, redis_server: EmbeddedRedis
):
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.default = Scripted(status=None, delay=0.3)  # attempts in flight at the kill
    exits: list[int] = []
    try:
        for rnd in range(3):
            for n in range(20):
                assert post(client, checkout_event(f"cs_test_rr_{rnd}_{n}")).status_code == 200
            time.sleep(0.5)
            redis_server.kill()
            time.sleep(1.0)
            redis_server.start()
            exits += supervise_until(worker, refcampaign, 20 * (rnd + 1), timeout=90)
        assert len(refcampaign.accepted) == 60
        # The worker rode through the three restarts: its consumer reconnected after each (one
        # "Connected" line per process started, one per restart). The supervisor started it
        # again only if the watchdog found that consumer stuck after a reconnection (Celery's
        # bug, tasks/watchdog.py); a crash, or any other exit, fails here.
        assert set(exits) <= {EXIT_STUCK}, exits
        connected = worker.output().count("Connected to redis://")
        assert connected == 1 + len(exits) + 3, worker.output()[-3000:]
        assert redis.Redis.from_url(env["REDIS_URL"]).zcard("rb:dlq") == 0
    finally:
        worker.stop()


def test_a_busy_worker_is_not_called_stuck(client, env, tmp_path, refcampaign):
    # Every pool process runs postbacks slower than the watchdog's stall window, so the worker
    # receives nothing for that long while more tasks wait than it can take.
    env = {**env, "DELIVERY_TIMEOUT": "60"}
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    refcampaign.default = Scripted(status=None, delay=STALL + 10)
    try:
        for n in range(40):
            assert post(client, checkout_event(f"cs_test_busy_{n}")).status_code == 200
        deadline = time.monotonic() + STALL + 2 * CHECK_EVERY + 5
        while time.monotonic() < deadline:
            assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-3000:]
            time.sleep(0.5)
        assert len(refcampaign.requests) >= 2  # both pool processes were busy all along
        assert redis.Redis.from_url(env["REDIS_URL"]).llen("refbridge") > 0
        assert stuck_lines(worker) == []
    finally:
        worker.kill()  # not stop(): a warm shutdown would wait for the slow postbacks
