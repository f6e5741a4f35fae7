"""The workers' heartbeat in a real Redis, and the `refbridge_workers` gauge it makes."""

from __future__ import annotations

import os

import redis

from bridge.delivery.ledger import Ledger
from bridge.ops import heartbeat, reports
from bridge.redis_client import redis_time


def workers(ledger: Ledger) -> float:
    _, gauges = reports.metrics_state(ledger)
    return gauges["workers"][1]


def test_a_beat_counts_a_worker_until_it_leaves(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    assert workers(ledger) == 0
    heartbeat.beat(client, "celery@a")
    heartbeat.beat(client, "celery@a")  # the same worker again: still one
    heartbeat.beat(client, "celery@b")
    assert workers(ledger) == 2
    assert reports.status(ledger)["workers"] == 2
    assert client.zscore(heartbeat.WORKERS, f"celery@a {os.getpid()}") is not None
    heartbeat.leave(client, "celery@a")
    assert workers(ledger) == 1


def test_a_worker_not_seen_for_a_minute_is_gone_and_pruned(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    now = redis_time(client)
    # Two workers that stopped beating (killed outright): their last beats, as they left them.
    client.zadd(heartbeat.WORKERS, {"celery@killed 1": now - heartbeat.SEEN_WITHIN - 1})
    client.zadd(heartbeat.WORKERS, {"celery@recent 2": now - heartbeat.SEEN_WITHIN + 10})
    assert workers(ledger) == 1
    heartbeat.beat(client, "celery@alive")
    assert workers(ledger) == 2
    members = {m.decode() for m in client.zrange(heartbeat.WORKERS, 0, -1)}
    assert members == {"celery@recent 2", f"celery@alive {os.getpid()}"}
