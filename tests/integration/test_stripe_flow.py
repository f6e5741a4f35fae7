"""Stripe webhooks through the real web app, Redis, a Celery worker and the RefCampaign stand-in."""

from __future__ import annotations

import copy
import time
from typing import Any

import redis

from bridge.delivery.keys import DUE, RETRY, item_key
from bridge.delivery.stats import stat
from tests.fixtures import stripe_fixture
from tests.settled import counter, logged, recorded
from tests.signing import OTHER_SECRET, stripe_body, stripe_headers
from tests.waiting import wait_until


def checkout_event(session_id: str = "cs_test_flow_1", **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    event["id"] = "evt_" + session_id
    event["created"] = int(time.time())
    event["data"]["object"].update({"id": session_id, **changes})
    return event


def post(client: Any, event: dict[str, Any], **sign: Any) -> Any:
    body = stripe_body(event)
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body, **sign))


def test_paid_checkout_becomes_one_postback(client, worker, refcampaign):
    event = checkout_event(metadata={"rcsid": "rcs_abc", "s1": "spring"})
    response = post(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"received": True}
    [payload] = refcampaign.wait_for(1)
    assert payload["externalId"] == "cs_test_flow_1"
    assert payload["conversionType"] == "SALE"
    assert payload["amount"] == 3000
    assert payload["currency"] == "USD"
    assert payload["sessionId"] == "rcs_abc"
    assert payload["customParams"] == {"s1": "spring"}
    assert "stripe@example.com" not in str(refcampaign.requests[0]["body"])


def test_resent_event_is_delivered_once(client, worker, refcampaign, redis_url):
    r = redis.Redis.from_url(redis_url)
    event = checkout_event("cs_test_resent")
    for _ in range(3):
        assert post(client, event).status_code == 200
    # The web knew both resends before it answered them: counted, nothing recorded for them.
    assert counter(r, stat("webhooks", provider="stripe", outcome="duplicate")) == 2
    # Delivered, by the only attempt ever claimed; no work left in the ledger.
    [item] = recorded(r, {"cs_test_resent": "delivered"}).values()
    assert item["attempts"] == "1"
    assert r.zcard(DUE) == 0
    assert len(refcampaign.requests) == 1


def test_rolled_secret_is_accepted(client, worker, refcampaign):
    assert post(client, checkout_event("cs_test_rolled"), secret=OTHER_SECRET).status_code == 200
    refcampaign.wait_for(1)


def test_bad_signature_is_400_and_nothing_is_sent(client, worker, refcampaign, redis_url):
    r = redis.Redis.from_url(redis_url)
    event = checkout_event("cs_test_forged")
    body = stripe_body(event)
    headers = stripe_headers(body, secret="whsec_attacker")
    assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 400
    stale = stripe_headers(body, timestamp=int(time.time()) - 3600)
    assert client.post("/webhooks/stripe", data=body, headers=stale).status_code == 400
    # Both refusals counted before the web answered, and nothing recorded: a worker sends only
    # what the ledger holds, and it holds nothing.
    for reason in ("bad_signature", "stale_timestamp"):
        rejected = stat("webhooks", provider="stripe", outcome="rejected", reason=reason)
        assert counter(r, rejected) == 1
    assert not list(r.scan_iter("rb:item:*"))
    assert r.zcard(DUE) == 0
    assert refcampaign.requests == []


def test_503_then_success_retries(client, worker, refcampaign):
    from tests.standins.refcampaign import Scripted

    refcampaign.script(Scripted(503), Scripted(429, headers={"Retry-After": "1"}))
    assert post(client, checkout_event("cs_test_retry")).status_code == 200
    refcampaign.wait_for(1, timeout=20)
    assert len(refcampaign.requests) == 3


def test_refcampaigns_answer_is_recorded_from_its_envelope(client, worker, refcampaign, env):
    import redis

    from bridge.delivery.ledger import Ledger
    from tests.waiting import wait_until

    assert post(client, checkout_event("cs_test_envelope")).status_code == 200
    refcampaign.wait_for(1)
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"]))
    wait_until(lambda: (ledger.get("cs_test_envelope") or {}).get("status") == "delivered")
    item = ledger.get("cs_test_envelope") or {}
    conversion = refcampaign.conversions["cs_test_envelope"]["id"]
    assert (item["conversion_id"], item["commission_id"]) == (conversion, "cmm_1")
    assert item["commission_amount"] == "300"  # a tenth of 3000, as the stand-in books it


def test_retry_after_is_a_floor_and_a_plan_quota_is_said_at_error_level(
    client, worker, refcampaign, env
):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.standins.refcampaign import Scripted

    r = redis.Redis.from_url(env["REDIS_URL"])
    quota = '{"success":false,"error":{"code":"LIMIT_EXCEEDED","message":"Monthly quota"}}'
    refcampaign.script(Scripted(429, quota, headers={"Retry-After": "3600"}))
    assert post(client, checkout_event("cs_test_quota")).status_code == 200
    # The 429's outcome as the ledger recorded it: the next attempt an hour out by Redis's clock
    # (DELIVERY_BACKOFF_MAX is 1 s here: the old cap retried within it).
    key = item_key("cs_test_quota")
    due = wait_until(lambda: r.zscore(RETRY, key), what="the quota's retry to be scheduled")
    seconds, micros = r.time()
    assert due - (seconds + micros / 1e6) > 3500
    assert counter(r, stat("postbacks", outcome="limit_exceeded")) == 1
    # And nothing attempts it before: the sweeper hands items out by due time, so once it has
    # handed out one due later than the old cap's retry of this one (at most 1 s after its
    # attempt), it would have handed this one out too. A conversion answered 429 with
    # Retry-After: 2 after this one was scheduled is due later, and is delivered by that retry.
    refcampaign.script(Scripted(429, headers={"Retry-After": "2"}))
    assert post(client, checkout_event("cs_test_quota_probe")).status_code == 200
    [probe] = recorded(r, {"cs_test_quota_probe": "delivered"}).values()
    assert probe["attempts"] == "2"
    assert [p["externalId"] for p in refcampaign.postbacks()] == [
        "cs_test_quota",
        "cs_test_quota_probe",
        "cs_test_quota_probe",
    ]
    assert r.hget(key, "attempts") == b"1"
    [said] = logged(worker, "refcampaign_limit_exceeded")
    assert said["level"] == "error" and said["externalId"] == "cs_test_quota"
    assert said["retry_in"] == 3600
    # A person lifts the quota, then pulls the retry forward.
    cli = str(Path(sys.executable).parent / "refbridge")
    cli_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [cli, "retry-now", "--all"], env=cli_env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    refcampaign.wait_for(1, timeout=10)
    status = subprocess.run(
        [cli, "status", "--json"], env=cli_env, capture_output=True, text=True, timeout=30
    )
    assert json.loads(status.stdout)["limit_exceeded"] == 1
