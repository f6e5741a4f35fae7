"""Attribution that follows the customer, through the Procfile's processes (gunicorn web, Celery
worker) and a Redis killed and restarted from its AOF between a sale and its renewals."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge.delivery.intake import ipn_item_id
from bridge.delivery.ledger import Ledger
from bridge.delivery.stats import STATS, stat
from bridge.ops.embedded_redis import EmbeddedRedis, free_port
from tests.fixtures import paypal_fixture, stripe_fixture
from tests.integration.test_paypal_flow import FORM
from tests.processes import WebProcess, WorkerProcess
from tests.signing import stripe_body, stripe_headers
from tests.standins.paypal import PayPalVerifier
from tests.standins.refcampaign import RefCampaign
from tests.test_mapping_paypal import SIGNUP_FREE_TRIAL, edit
from tests.waiting import wait_until

SUBSCRIPTION_CHECKOUT = "pay__checkout.session.completed.data.json"
BASIL_INVOICE = "pay__invoice.payment_failed.data.json"
OLD_INVOICE = "pay__invoice.payment_action_required.data.json"
CHECKOUT = "srm__checkout.session.completed.json"


def stripe_event(fixture: str, event_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
    """A sample event, fresh, no email anywhere on it: only ids can attribute it."""
    event = copy.deepcopy(stripe_fixture(fixture))
    event.update(id=event_id, type=event_type, created=int(time.time()))
    obj = event["data"]["object"]
    obj.update(customer_details=None, customer_email=None, receipt_email=None, **fields)
    return event


def renewal(fixture: str, invoice_id: str, **fields: Any) -> dict[str, Any]:
    return stripe_event(
        fixture,
        f"evt_{invoice_id}",
        "invoice.paid",
        id=invoice_id,
        status="paid",
        billing_reason="subscription_cycle",
        amount_paid=1900,
        **fields,
    )


def basil_parent(subscription: str) -> dict[str, Any]:
    return {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {"license_id": "0"}, "subscription": subscription},
    }


def send(web: WebProcess, event: dict[str, Any]) -> None:
    body = stripe_body(event)
    answer = requests.post(
        f"{web.url}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=10
    )
    assert answer.status_code == 200, answer.text


def delivered(refcampaign: RefCampaign, external_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((p for p in refcampaign.accepted if p["externalId"] == external_id), None)

    wait_until(lambda: found() is not None, timeout=20, what=f"the postback of {external_id}")
    payload = found()
    assert payload is not None
    return payload


@pytest.fixture()
def procfile(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[WebProcess, WorkerProcess]]:
    """The Procfile's web (gunicorn) and worker (Celery), started; stopped after the test."""
    web = WebProcess(env, tmp_path / "web.log", free_port()).start()
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    yield web, worker
    web.stop()
    worker.stop()


def restart_everything(web: WebProcess, worker: WorkerProcess, server: EmbeddedRedis) -> None:
    """SIGKILL the web, the worker and Redis; start Redis from its AOF, then the others."""
    for process in (web, worker):
        process.kill()
    server.kill()
    server.start()
    worker.start()
    web.start()


def test_renewals_keep_their_affiliate_through_a_restart_of_everything(
    env: dict[str, str],
    refcampaign: RefCampaign,
    redis_server: EmbeddedRedis,
    procfile: tuple[WebProcess, WorkerProcess],
) -> None:
    web, worker = procfile
    checkout = stripe_event(
        SUBSCRIPTION_CHECKOUT,
        "evt_cs_sub_1",
        "checkout.session.completed",
        id="cs_sub_1",
        client_reference_id="rcs_ref_1",
        subscription="sub_A",
        customer="cus_A",
    )
    send(web, checkout)
    assert delivered(refcampaign, "cs_sub_1")["sessionId"] == "rcs_ref_1"

    restart_everything(web, worker, redis_server)

    # A renewal with no id of its own (current API shape): the checkout's session.
    send(web, renewal(BASIL_INVOICE, "in_renewal_1", parent=basil_parent("sub_A")))
    first = delivered(refcampaign, "in_renewal_1")
    assert first["sessionId"] == "rcs_ref_1"
    assert first["metadata"]["attributedFrom"] == "cs_sub_1"
    assert "customerEmailHash" not in first
    assert '"attributedFrom":"cs_sub_1"' in web.output()  # on-call sees where ids came from

    # A renewal whose subscription metadata names a session (older API shape) keeps it.
    own = {"metadata": {"refcampaign_session": "rcs_own"}}
    send(
        web,
        renewal(
            OLD_INVOICE,
            "in_renewal_2",
            subscription="sub_A",
            customer="cus_A",
            subscription_details=own,
        ),
    )
    second = delivered(refcampaign, "in_renewal_2")
    assert second["sessionId"] == "rcs_own"
    assert "attributedFrom" not in second["metadata"]

    # A renewal of a subscription nobody knows, with no email: recorded as unattributed.
    client = redis.Redis.from_url(env["REDIS_URL"])
    unattributed = stat("webhooks", provider="stripe", outcome="unattributed")
    before = int(client.hget(STATS, unattributed) or 0)
    send(web, renewal(OLD_INVOICE, "in_unknown", subscription="sub_Z", customer="cus_Z"))
    assert int(client.hget(STATS, unattributed) or 0) == before + 1
    assert Ledger(client).get("in_unknown") is None

    # A second purchase by the known customer: attributed from the customer's latest ids.
    send(
        web,
        stripe_event(
            CHECKOUT,
            "evt_cs_again",
            "checkout.session.completed",
            id="cs_again",
            customer="cus_A",
        ),
    )
    again = delivered(refcampaign, "cs_again")
    assert (again["sessionId"], again["metadata"]["attributedFrom"]) == (
        "rcs_own",
        "in_renewal_2",
    )
    assert all(p["externalId"] != "in_unknown" for p in refcampaign.postbacks())


def test_a_paypal_subscription_signup_attributes_its_payments(
    env: dict[str, str],
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    procfile: tuple[WebProcess, WorkerProcess],
) -> None:
    web, worker = procfile
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"]))

    def ipn(raw: bytes) -> None:
        paypal.send(raw)
        answer = requests.post(f"{web.url}/webhooks/paypal/ipn", data=raw, headers=FORM, timeout=10)
        assert answer.status_code == 200

    # A paid sign-up (no free trial): no conversion, but its custom is remembered.
    signup = edit(SIGNUP_FREE_TRIAL, mc_amount1="9.99")
    ipn(signup)
    wait_until(
        lambda: (ledger.get(ipn_item_id(signup)) or {}).get("status") == "verified",
        timeout=20,
        what="the sign-up verified",
    )
    payment = edit(
        paypal_fixture("boxbilling__subscr_payment_completed.txt"),
        subscr_id="I-FREETRIAL42",
        custom=None,
        payer_email=None,
        payer_id="OTHERPAYER",
    )
    ipn(payment)
    sent = delivered(refcampaign, "6SR99524AP993094V")
    assert (sent["sessionId"], sent["clickId"]) == ("sess_abc", "clk_123")
    assert sent["metadata"]["attributedFrom"] == "I-FREETRIAL42"
    assert '"event":"attributed_from_memory"' in worker.output()
