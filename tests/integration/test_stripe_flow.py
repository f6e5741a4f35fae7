"""Stripe webhooks through the real web app, Redis, a Celery worker and the RefCampaign stand-in."""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.fixtures import stripe_fixture
from tests.signing import OTHER_SECRET, stripe_body, stripe_headers


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


def test_resent_event_is_delivered_once(client, worker, refcampaign):
    event = checkout_event("cs_test_resent")
    for _ in range(3):
        assert post(client, event).status_code == 200
    refcampaign.wait_for(1)
    time.sleep(1.5)
    assert len(refcampaign.requests) == 1


def test_rolled_secret_is_accepted(client, worker, refcampaign):
    assert post(client, checkout_event("cs_test_rolled"), secret=OTHER_SECRET).status_code == 200
    refcampaign.wait_for(1)


def test_bad_signature_is_400_and_nothing_is_sent(client, worker, refcampaign):
    event = checkout_event("cs_test_forged")
    body = stripe_body(event)
    headers = stripe_headers(body, secret="whsec_attacker")
    assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 400
    stale = stripe_headers(body, timestamp=int(time.time()) - 3600)
    assert client.post("/webhooks/stripe", data=body, headers=stale).status_code == 400
    time.sleep(1.5)
    assert refcampaign.requests == []


def test_503_then_success_retries(client, worker, refcampaign):
    from tests.standins.refcampaign import Scripted

    refcampaign.script(Scripted(503), Scripted(429, headers={"Retry-After": "1"}))
    assert post(client, checkout_event("cs_test_retry")).status_code == 200
    refcampaign.wait_for(1, timeout=20)
    assert len(refcampaign.requests) == 3
