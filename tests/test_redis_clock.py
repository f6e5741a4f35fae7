"""Every score, lease and due time comes from Redis's clock, never from the calling host's: a
worker whose clock runs 30 s ahead takes no live lease and schedules no retry early (issue 23,
finding 2)."""

from __future__ import annotations

import dataclasses
import time
import types

import pytest
import redis

from bridge.delivery import ledger as ledger_module
from bridge.delivery.keys import DUE, item_key
from bridge.delivery.ledger import Ledger
from bridge.redis_client import redis_time

AHEAD = 30.0


def run_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on this process's clock, as the ledger reads it, runs AHEAD seconds fast."""
    fast = types.SimpleNamespace(time=lambda: time.time() + AHEAD, monotonic=time.monotonic)
    monkeypatch.setattr(ledger_module, "time", fast)


@pytest.fixture()
def ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    run_ahead(monkeypatch)


def test_a_host_whose_clock_runs_ahead_takes_no_live_lease(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    ledger.enqueue("it_lease", "rb:seen:test:lease", {"kind": "conversion"})
    [first] = ledger.claim(["it_lease"], lease=20).claims  # a host with the right time: 20 s
    run_ahead(monkeypatch)  # another host, 30 s fast, gets the item's task a second time
    assert ledger.claim(["it_lease"], lease=20).words == {"it_lease": "running"}  # still live
    assert first.item_id == "it_lease"


def test_due_times_and_retries_count_by_redis(redis_url: str, ahead: None) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    ledger.enqueue("it_due", "rb:seen:test:due", {"kind": "conversion"})
    assert abs(float(client.zscore(DUE, item_key("it_due")) or 0) - redis_time(client)) < 2
    [claim] = ledger.claim(["it_due"], lease=20).claims
    assert ledger.schedule_retry(claim, 5, "", {}, "503")
    due = float(client.zscore(DUE, item_key("it_due")) or 0)
    assert 4 < due - redis_time(client) <= 5  # 5 s from Redis's now, not 35
    assert ledger.claim(["it_due"], lease=20).words == {"it_due": "not_due"}
    assert ledger.sweep(10) == ([], [])  # nothing for the sweeper either


def test_the_retry_window_counts_by_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A window of 40 s and a retry asked for in 20 s: inside the window by Redis's clock. A
    # host 30 s fast that judged by its own clock would dead-letter it (30 + 20 > 40).
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from bridge.delivery import attempts
    from bridge.delivery.outcomes import RetryLater
    from config import Settings

    ledger = Ledger(redis.Redis.from_url(redis_url))
    ledger.enqueue("it_window", "rb:seen:test:window", {"kind": "conversion"})
    run_ahead(monkeypatch)  # this host, 30 s fast, claims it and judges its retry
    monkeypatch.setattr(attempts, "time", ledger_module.time)
    [claim] = ledger.claim(["it_window"], lease=20).claims
    claim = dataclasses.replace(claim, at=attempts.time.time())  # by this host's clock
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "REFCAMPAIGN_API_KEY": "k", "DELIVERY_MAX_AGE": "40"}
    )
    worker = attempts.Worker(ledger, requests.Session(), settings, ThreadPoolExecutor(1))
    outcome = RetryLater(503, "unavailable", retry_after=20)
    notes: dict[str, str | float] = {}
    word = attempts._retry(worker, claim, claim.item, outcome, {}, notes)  # noqa: SLF001
    assert word == "retried", notes
    assert (ledger.get("it_window") or {})["status"] == "pending"
