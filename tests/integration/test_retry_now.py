"""`refbridge retry-now`: after an outage is fixed, scheduled retries run at once, not after
their backoff; items delivered, dead-lettered or being attempted are left alone.

A real redis-server, a real Celery worker and the RefCampaign stand-in, which is "down" (503)
while conversions are scheduled minutes out, then back.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bridge.delivery.keys import DLQ, DUE, RETRY, item_key
from bridge.delivery.ledger import Ledger
from tests.integration.test_cli import (
    REFBRIDGE,
    ok,
    one_error_line,
    post_checkout,
    postbacks_for,
    wait_dead_lettered,
    wait_until,
)
from tests.processes import WorkerProcess
from tests.settled import recorded
from tests.standins.refcampaign import RefCampaign, Scripted

UNPROCESSABLE = '{"error":["amount must be an integer in minor units"]}'


@pytest.fixture()
def patient_env(env: dict[str, str]) -> dict[str, str]:
    """Production-like backoff: a failed postback waits five minutes or more."""
    return {
        **env,
        "DELIVERY_BACKOFF_BASE": "300",
        "DELIVERY_BACKOFF_MAX": "3600",
        "DELIVERY_MAX_AGE": "86400",
        "DELIVERY_TIMEOUT": "10",
    }


@pytest.fixture()
def patient_worker(patient_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(patient_env, tmp_path / "patient-worker.log").start()
    yield proc
    proc.stop()


@pytest.fixture()
def cli(
    patient_env: dict[str, str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    cwd = tmp_path / "cli"
    cwd.mkdir()
    cli_env = {k: v for k, v in patient_env.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REFBRIDGE, *args], env=cli_env, cwd=cwd, capture_output=True, text=True, timeout=60
        )

    return run


def scheduled(redis_url: str, ids: list[str], timeout: float = 20.0) -> dict[str, float]:
    """Wait until each of `ids` waits for a retry; their due times."""
    client = redis.Redis.from_url(redis_url)

    def due_times() -> dict[str, float] | None:
        scores = {i: client.zscore(RETRY, item_key(i)) for i in ids}
        return None if None in scores.values() else scores  # type: ignore[return-value]

    return wait_until(due_times, timeout, f"{len(ids)} scheduled retries")


def test_after_an_outage_retry_now_all_delivers_everything_at_once(
    client, patient_worker, refcampaign: RefCampaign, redis_url, cli
):
    r = redis.Redis.from_url(redis_url)
    refcampaign.default = Scripted(503)
    ids = [f"cs_later_{n}" for n in range(6)]
    for session_id in ids:
        post_checkout(client, session_id)
    due = scheduled(redis_url, ids)
    assert min(due.values()) > time.time() + 200, "scheduled minutes out"
    tries = len(refcampaign.requests)
    assert tries == len(ids)

    refcampaign.default = None  # RefCampaign is back
    assert ok(cli("retry-now", "--all")) == f"retried now: {len(ids)}\n"
    # What retry-now did, by Redis's clock: every retry made due by the time it answered, none
    # left scheduled. No wall-clock bound on what follows (this test runs beside others): the
    # backoff alone would wait 300 s or more, far past what `recorded` waits.
    seconds, micros = r.time()
    assert r.zcard(RETRY) == 0
    items = recorded(r, dict.fromkeys(ids, "delivered"))
    assert all(float(item["next_due"]) <= seconds + micros / 1e6 for item in items.values())
    assert sorted(p["externalId"] for p in refcampaign.accepted) == ids
    # Each delivered by its second attempt, the only one since; nothing left to do.
    assert {item["attempts"] for item in items.values()} == {"2"}
    assert r.zcard(DUE) == 0
    assert len(refcampaign.requests) == 2 * len(ids), "each retried once, none twice"
    assert ok(cli("retry-now", "--all")) == "retried now: 0\n"


def test_retry_now_by_id_with_json_and_what_it_leaves_alone(
    client, patient_worker, refcampaign: RefCampaign, redis_url, cli
):
    refcampaign.script(Scripted(422, body=UNPROCESSABLE))
    post_checkout(client, "cs_now_dead")
    wait_dead_lettered(redis_url, 1)
    post_checkout(client, "cs_now_done")
    refcampaign.wait_for(1)
    refcampaign.default = Scripted(503)
    post_checkout(client, "cs_now_a")
    post_checkout(client, "cs_now_b")
    due = scheduled(redis_url, ["cs_now_a", "cs_now_b"])
    ledger = Ledger(redis.Redis.from_url(redis_url))
    r = ledger.redis
    done_before = recorded(r, {"cs_now_done": "delivered"})["cs_now_done"]
    dead_before = ledger.get("cs_now_dead")

    refcampaign.default = None
    answer = json.loads(ok(cli("retry-now", "--json", "cs_now_a")))
    assert answer == {"retried_now": 1, "ids": ["cs_now_a"]}
    # cs_now_a delivered by the retry pulled forward; cs_now_b's retry still where it was,
    # minutes out by the ledger's schedule: nothing attempts it before then.
    assert recorded(r, {"cs_now_a": "delivered"})["cs_now_a"]["attempts"] == "2"
    assert r.zscore(RETRY, item_key("cs_now_b")) == due["cs_now_b"]
    assert len(postbacks_for(refcampaign, "cs_now_b")) == 1, "only the id given"
    assert (ledger.get("cs_now_b") or {})["status"] == "pending"

    left = cli("retry-now", "cs_now_done", "cs_now_dead")
    assert left.returncode == 0
    assert left.stdout == "retried now: 0\n"
    assert sorted(left.stderr.splitlines()) == [
        "refbridge: cs_now_dead is not scheduled for a retry (status dead); left as is",
        "refbridge: cs_now_done is not scheduled for a retry (status delivered); left as is",
    ]
    assert ledger.get("cs_now_dead") == dead_before
    assert ledger.dead_letter_ids() == ["cs_now_dead"]
    # Both left as they were, neither due: nothing attempts them again.
    assert ledger.get("cs_now_done") == done_before
    assert r.zscore(DUE, item_key("cs_now_dead")) is None
    assert r.zscore(DUE, item_key("cs_now_done")) is None
    assert len(postbacks_for(refcampaign, "cs_now_dead")) == 1
    assert len(postbacks_for(refcampaign, "cs_now_done")) == 1

    unknown = cli("retry-now", "cs_now_b", "cs_nobody")
    assert one_error_line(unknown) == "refbridge: no such item: cs_nobody"
    assert unknown.stdout == "retried now: 1\n", "the known ones are still retried"
    recorded(r, {"cs_now_b": "delivered"})
    assert len(postbacks_for(refcampaign, "cs_now_b")) == 2


def test_an_attempt_that_is_running_is_not_pulled_into_a_second_one(
    client, patient_worker, refcampaign: RefCampaign, redis_url, cli
):
    r = redis.Redis.from_url(redis_url)
    refcampaign.script(Scripted(None, delay=6))  # RefCampaign answers, slowly
    post_checkout(client, "cs_now_running")
    wait_until(lambda: refcampaign.requests, 10, "the attempt to start")
    busy = cli("retry-now", "cs_now_running")
    assert busy.returncode == 0
    assert busy.stdout == "retried now: 0\n"
    assert busy.stderr == (
        "refbridge: cs_now_running is not scheduled for a retry (an attempt is running now);"
        " left as is\n"
    )
    # Delivered by the attempt that was running, the only one ever claimed of it: no other
    # attempt can still be on its way.
    [item] = recorded(r, {"cs_now_running": "delivered"}, timeout=15).values()
    assert item["attempts"] == "1"
    assert len(postbacks_for(refcampaign, "cs_now_running")) == 1


@pytest.mark.parametrize("args", [(), ("cs_x", "--all")])
def test_retry_now_needs_ids_or_all(redis_url, cli, args):
    result = cli("retry-now", *args)
    assert one_error_line(result) == "refbridge: retry-now: give item ids or --all (not both)"
    assert result.stdout == ""


def test_retry_now_all_works_through_a_large_backlog_in_steps(redis_url, cli):
    # More items than one script call takes: every one of them is made due, none twice.
    ledger = Ledger(redis.Redis.from_url(redis_url))
    count = 1234
    for n in range(count):
        ledger.enqueue(f"cs_bulk_{n}", f"rb:seen:test:bulk_{n}", {"kind": "conversion"})
    claims = ledger.claim([f"cs_bulk_{n}" for n in range(count)], lease=30).claims
    assert len(claims) == count
    for claim in claims:
        ledger.schedule_retry(claim, 3600, "", {}, "503")
    answer = json.loads(ok(cli("retry-now", "--all", "--json")))
    assert answer["retried_now"] == count
    assert sorted(answer["ids"]) == sorted(f"cs_bulk_{n}" for n in range(count))
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(RETRY) == 0
    assert client.zcount("rb:due", "-inf", time.time()) == count
    assert client.zcard(DLQ) == 0
