"""Every delivery is a Celery task an operator can see, and the broker queue holds the backlog
(issue 23): a real worker, real Redis, the RefCampaign stand-in, and Celery's own tools."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import redis

from bridge.conversion import Conversion
from bridge.delivery import intake
from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import PUBLISH_GRACE, QUEUE
from bridge.providers.stripe.mapping import map_stripe_event
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import ROOT
from tests.standins.refcampaign import Scripted
from tests.waiting import wait_until


def inspect(env: dict[str, str], what: str) -> dict[str, Any]:
    """`celery -A celery_app inspect WHAT --json`, as an operator would run it."""
    cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "inspect", what, "--json"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_each_delivery_at_a_steady_rate_is_a_celery_task(client, env, worker, refcampaign):
    ids = [f"cs_test_task_{n}" for n in range(20)]
    for external_id in ids:
        assert post(client, checkout_event(external_id)).status_code == 200
        time.sleep(0.05)
    refcampaign.wait_for(len(ids))
    [stats] = inspect(env, "stats").values()
    assert stats["total"] == {"refbridge.deliver": len(ids)}  # one task per delivery, no more


def test_a_backlog_waits_in_celerys_queue_and_running_deliveries_show(
    client, env, worker, refcampaign, redis_url
):
    refcampaign.default = Scripted(status=None, delay=1.5)  # RefCampaign slow
    ids = [f"cs_test_backlog_{n}" for n in range(12)]
    for external_id in ids:
        assert post(client, checkout_event(external_id)).status_code == 200
    # Two pool processes take a task each (and may hold one more each): the rest waits in the
    # broker's queue, where an operator looks for it.
    assert redis.Redis.from_url(redis_url).llen(QUEUE) >= len(ids) - 4
    active = wait_until(lambda: [t for ts in inspect(env, "active").values() for t in ts])
    assert {task["name"] for task in active} == {"refbridge.deliver"}
    named = {external_id for task in active for external_id in task["args"][0]}
    assert named and named <= set(ids)
    refcampaign.wait_for(len(ids), timeout=60)


def stripe_conversion(external_id: str) -> Conversion:
    conversion = map_stripe_event(checkout_event(external_id), recurring=False)
    assert isinstance(conversion, Conversion)
    return conversion


def test_an_item_whose_task_was_never_published_is_delivered_after_its_grace(
    worker, refcampaign, redis_url
):
    # The web recorded it and died (or the broker refused) before publishing its task.
    def lost(ids: Any) -> None:
        raise ConnectionError("gone before the publish")

    ledger = Ledger(redis.Redis.from_url(redis_url), publish=lost)
    started = time.monotonic()
    outcome = intake.accept_conversion(
        ledger,
        stripe_conversion("cs_test_unpublished"),
        provider="stripe",
        event_id="evt_unpublished",
        received_at=time.time(),
    )
    assert isinstance(outcome, intake.Accepted)
    [payload] = refcampaign.wait_for(1, timeout=PUBLISH_GRACE + 15)
    assert payload["externalId"] == "cs_test_unpublished"
    assert time.monotonic() - started >= PUBLISH_GRACE - 1  # the sweeper's, not a task's own


def test_fresh_work_is_delivered_within_seconds_while_70_suspects_drain(
    client, env, worker, refcampaign, redis_url
):
    # 70 conversions whose worker died mid-attempt (more than one claim used to look through):
    # recorded, claimed, and never finished, their leases over. Each is slow at RefCampaign.
    ledger = Ledger(redis.Redis.from_url(redis_url))
    suspects = [f"cs_test_suspect_{n}" for n in range(70)]
    for external_id in suspects:
        refcampaign.per_conversion[external_id] = Scripted(status=None, delay=1.0)
        assert intake.accept_conversion(
            ledger,
            stripe_conversion(external_id),
            provider="stripe",
            event_id=f"evt_{external_id}",
            received_at=time.time(),
        )
    for start in range(0, len(suspects), 8):
        assert ledger.claim(suspects[start : start + 8], lease=-1).claims
    # Meanwhile, fresh conversions arrive: delivered within seconds, not after the suspects.
    time.sleep(1.5)  # the sweeper has published every suspect by now
    fresh = [f"cs_test_fresh_{n}" for n in range(5)]
    started = time.monotonic()
    for external_id in fresh:
        assert post(client, checkout_event(external_id)).status_code == 200
    arrived = lambda: set(fresh) <= {p["externalId"] for p in refcampaign.accepted}  # noqa: E731
    wait_until(arrived, 10, "the fresh conversions")
    assert time.monotonic() - started < 8
    # The suspects run one at a time in the whole system: never two at RefCampaign at once.
    done = [p["externalId"] for p in refcampaign.accepted if p["externalId"] in suspects]
    assert len(done) < len(suspects)
    drained = lambda: sum(p["externalId"] in suspects for p in refcampaign.accepted) >= 4  # noqa: E731
    wait_until(drained, 20, "suspects, one after another")
    assert max_at_once(refcampaign, set(suspects)) == 1


def max_at_once(refcampaign: Any, ids: set[str]) -> int:
    """The most postbacks of `ids` the stand-in was answering at one moment (each takes 1 s)."""
    with refcampaign.lock:
        bodies = [(r["at"], json.loads(r["body"] or b"{}")) for r in refcampaign.requests]
    starts = [at for at, body in bodies if body.get("externalId") in ids]
    return max(sum(1 for s in starts if t <= s < t + 0.95) for t in starts)
