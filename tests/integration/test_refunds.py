"""Refunds and lost chargebacks claw back their commission, end to end through the Procfile's
processes (gunicorn web, Celery worker), a real Redis, and the RefCampaign, Stripe API, PayPal
IPN and PayPal API stand-ins: once, after the sale, with the right amount (SPEC, Refunds and
chargebacks). One web and one worker serve the module; each test uses its own ids."""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import module_env
from tests.fixtures import paypal_webhook_fixture, stripe_fixture
from tests.processes import WebProcess, WorkerProcess
from tests.signing import stripe_body, stripe_headers
from tests.standins.paypal import PayPalVerifier
from tests.standins.paypal_api import PayPalApi
from tests.standins.refcampaign import RefCampaign, Scripted
from tests.standins.stripe_api import Scripted as StripeScripted
from tests.standins.stripe_api import StripeAPI, server_error, slow
from tests.waiting import wait_until

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")
STRIPE_KEY = "rk_test_refunds_7c1d93a2"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Stack:
    env: dict[str, str]
    web: WebProcess
    worker: WorkerProcess
    refcampaign: RefCampaign
    stripe: StripeAPI
    paypal: PayPalVerifier
    paypal_api: PayPalApi
    ledger: Ledger

    def stripe_event(self, event: dict[str, Any]) -> None:
        body = stripe_body(event)
        answer = requests.post(
            f"{self.web.url}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=10
        )
        assert answer.status_code == 200, answer.text

    def ipn(self, raw: bytes) -> None:
        self.paypal.send(raw)
        answer = requests.post(
            f"{self.web.url}/webhooks/paypal/ipn", data=raw, headers=FORM, timeout=10
        )
        assert answer.status_code == 200, answer.text

    def paypal_event(self, event: dict[str, Any]) -> None:
        raw = json.dumps(event, indent=1).encode()
        headers = {**self.paypal_api.send(raw), "Content-Type": "application/json"}
        answer = requests.post(
            f"{self.web.url}/webhooks/paypal", data=raw, headers=headers, timeout=10
        )
        assert answer.status_code == 200, answer.text

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in self.env.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [REFBRIDGE, *args], env=env, capture_output=True, text=True, timeout=60
        )

    def item(self, item_id: str) -> dict[str, str]:
        return self.ledger.get(item_id) or {}

    def wait_status(self, item_id: str, status: str, timeout: float = 20.0) -> dict[str, str]:
        wait_until(
            lambda: self.item(item_id).get("status") == status,
            timeout=timeout,
            what=f"{item_id} {status} (is {self.item(item_id).get('status')})",
        )
        return self.item(item_id)


@pytest.fixture(scope="module")
def _stripe_api() -> Iterator[StripeAPI]:
    server = StripeAPI(STRIPE_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _stack(
    redis_server: EmbeddedRedis,
    _refcampaign: RefCampaign,
    _paypal: PayPalVerifier,
    _paypal_api: PayPalApi,
    _stripe_api: StripeAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env = module_env(redis_server, _refcampaign, _paypal, _paypal_api)
    env.update(STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_URL=_stripe_api.url)
    logs = tmp_path_factory.mktemp("refunds")
    web = WebProcess(env, logs / "web.log", free_port()).start()
    worker = WorkerProcess(env, logs / "worker.log").start()
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"]))
    try:
        yield Stack(env, web, worker, _refcampaign, _stripe_api, _paypal, _paypal_api, ledger)
    finally:
        web.stop()
        worker.stop()


@pytest.fixture()
def stack(_stack: Stack) -> Stack:
    _stack.refcampaign.reset()
    _stack.stripe.reset()
    _stack.paypal.reset()
    _stack.paypal_api.reset(keep_tokens=True)
    return _stack


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


# --- Stripe ----------------------------------------------------------------------------------


def checkout(session_id: str, intent: str, amount: int = 3000) -> dict[str, Any]:
    """A paid one-time checkout carrying its affiliate, as Stripe sends it (a real sample)."""
    event = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    event.update(id=new_id("evt_cs_"), created=int(time.time()))
    event["data"]["object"].update(
        id=session_id,
        payment_intent=intent,
        amount_total=amount,
        metadata={"refcampaign_session": "rcs_refund"},
    )
    return event


def charge_refunded(
    intent: str, refunded: int, amount: int = 3000, charge: str | None = None
) -> dict[str, Any]:
    """Stripe's `charge.refunded` (a real sample) of the charge of `intent`, `refunded` so far."""
    event = copy.deepcopy(stripe_fixture("srm__charge.refunded.json"))
    event.update(id=new_id("evt_re_"), created=int(time.time()))
    event["data"]["object"].update(
        id=charge or "ch_" + intent.removeprefix("pi_"),
        payment_intent=intent,
        amount=amount,
        amount_refunded=refunded,
        amount_captured=amount,
        refunded=refunded == amount,
    )
    return event


def dispute_closed(intent: str, status: str) -> dict[str, Any]:
    """Stripe's `charge.dispute.closed` (a real dispute object) of the charge of `intent`."""
    event = copy.deepcopy(stripe_fixture("stripe_openapi__charge.dispute.closed.json"))
    event.update(id=new_id("evt_dp_"), created=int(time.time()))
    event["data"]["object"].update(
        id=new_id("dp_"),
        charge="ch_" + intent.removeprefix("pi_"),
        payment_intent=intent,
        status=status,
    )
    return event


def sale(stack: Stack, amount: int = 3000) -> tuple[str, str]:
    """A one-time checkout, delivered: (its externalId, its payment intent)."""
    session, intent = new_id("cs_test_"), new_id("pi_")
    stack.stripe_event(checkout(session, intent, amount))
    wait_until(lambda: session in stack.refcampaign.conversions, timeout=20, what="the sale")
    return session, intent


def refunds_of(stack: Stack, external_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.refcampaign.refunds if r["externalId"] == external_id]


def test_a_full_refund_is_sent_once_without_an_amount(stack: Stack) -> None:
    session, intent = sale(stack)
    stack.stripe_event(charge_refunded(intent, 3000))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "reason": "refund"}
    assert stack.refcampaign.refunded[session] is None  # a full refund


def test_a_partial_refund_then_the_rest_are_two_calls_with_the_right_amounts(
    stack: Stack,
) -> None:
    session, intent = sale(stack)
    stack.stripe_event(charge_refunded(intent, 1000))
    stack.refcampaign.wait_for_refunds(1)
    stack.stripe_event(charge_refunded(intent, 3000))
    first, rest = stack.refcampaign.wait_for_refunds(2)
    assert first == {"externalId": session, "amount": 1000, "reason": "refund"}
    assert rest == {"externalId": session, "amount": 2000, "reason": "refund"}
    assert stack.refcampaign.refunded[session] == 3000


def test_an_older_refund_event_arriving_late_sends_nothing_more(stack: Stack) -> None:
    session, intent = sale(stack)
    stack.stripe_event(charge_refunded(intent, 2500))
    stack.refcampaign.wait_for_refunds(1)
    stack.stripe_event(charge_refunded(intent, 1000))  # Stripe does not promise order
    time.sleep(2)
    assert refunds_of(stack, session) == [
        {"externalId": session, "amount": 2500, "reason": "refund"}
    ]


def test_a_resent_refund_is_sent_once(stack: Stack) -> None:
    session, intent = sale(stack)
    event = charge_refunded(intent, 3000)
    for _ in range(3):
        stack.stripe_event(event)
    stack.refcampaign.wait_for_refunds(1)
    time.sleep(2)
    assert len(stack.refcampaign.refund_requests()) == 1


def test_a_refund_waits_for_its_failing_sale_and_goes_once_after_it(stack: Stack) -> None:
    session, intent = new_id("cs_test_"), new_id("pi_")
    stack.refcampaign.per_conversion[session] = Scripted(503)
    stack.stripe_event(checkout(session, intent))
    wait_until(lambda: len(stack.refcampaign.postbacks()) >= 2, timeout=20, what="two failures")
    event = charge_refunded(intent, 3000)
    stack.stripe_event(event)
    item = stack.wait_status(f"refund_{event['id']}", "waiting")
    assert item["external_id"] == session
    time.sleep(2)
    assert stack.refcampaign.refund_requests() == []
    del stack.refcampaign.per_conversion[session]
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "reason": "refund"}
    paths = [r["path"] for r in stack.refcampaign.requests]
    last_sale = max(i for i, p in enumerate(paths) if p.endswith("/postback"))
    assert paths.index("/api/v1/conversions/refund") > last_sale
    assert len(stack.refcampaign.refund_requests()) == 1


def test_a_lost_dispute_claws_back_the_whole_sale_and_a_won_one_nothing(stack: Stack) -> None:
    won_session, won_intent = sale(stack)
    lost_session, lost_intent = sale(stack)
    stack.stripe_event(dispute_closed(won_intent, "won"))
    stack.stripe_event(dispute_closed(lost_intent, "lost"))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": lost_session, "reason": "chargeback"}
    time.sleep(2)
    assert refunds_of(stack, won_session) == []


def test_a_refund_of_a_sale_made_before_installation_is_found_through_stripe(
    stack: Stack,
) -> None:
    session, intent = new_id("cs_test_old_"), new_id("pi_old_")
    # RefCampaign has the sale (recorded before the bridge existed); the bridge does not.
    stack.refcampaign.conversions[session] = {"id": "conv_old", "payload": {"amount": 3000}}
    made = int(time.time()) - 86400  # long before: no waiting for its webhook
    session_object = {"object": "checkout.session", "payment_intent": intent, "created": made}
    stack.stripe.add_sessions([{"id": session, **session_object}])
    stack.stripe_event(charge_refunded(intent, 3000))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "reason": "refund"}
    looked = [r["path"] for r in stack.stripe.lookup_requests()]
    assert looked and all(p.startswith("/v1/checkout/sessions") for p in looked)


def old_sale_in_stripe(stack: Stack) -> tuple[str, str]:
    """A checkout Stripe knows, made long before the bridge (no webhook wait): (id, intent)."""
    session, intent = new_id("cs_test_old_"), new_id("pi_old_")
    made = int(time.time()) - 86400
    session_object = {"object": "checkout.session", "payment_intent": intent, "created": made}
    stack.stripe.add_sessions([{"id": session, **session_object}])
    return session, intent


def test_a_stripe_look_up_that_fails_slow_or_5xx_is_retried_until_it_answers(
    stack: Stack,
) -> None:
    session, intent = old_sale_in_stripe(stack)
    stack.refcampaign.conversions[session] = {"id": "conv_old", "payload": {"amount": 3000}}
    # Slower than DELIVERY_TIMEOUT (2 s here): cut, never sent late; then a 500; then it answers.
    stack.stripe.script(slow(5), server_error(500))
    event = charge_refunded(intent, 3000)
    stack.stripe_event(event)
    [refund] = stack.refcampaign.wait_for_refunds(1, timeout=30)
    assert refund == {"externalId": session, "reason": "refund"}
    # The slow answer was cut (the stand-in records a request once it has answered it).
    assert len(stack.stripe.lookup_requests()) >= 2
    assert int(stack.item(f"refund_{event['id']}")["attempts"]) >= 3
    assert len(stack.refcampaign.refund_requests()) == 1


def test_a_refused_stripe_key_dead_letters_the_refund(stack: Stack) -> None:
    _, intent = old_sale_in_stripe(stack)
    refused = {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
    stack.stripe.script(StripeScripted(401, refused))
    event = charge_refunded(intent, 3000)
    stack.stripe_event(event)
    item = stack.wait_status(f"refund_{event['id']}", "dead")
    assert (item["reason"], item["last_status"]) == ("stripe_unauthorized", "401")
    assert STRIPE_KEY not in json.dumps(item)
    assert stack.refcampaign.refund_requests() == []


def test_a_refund_refcampaign_has_no_conversion_for_is_dead_lettered_not_found(
    stack: Stack,
) -> None:
    session, intent = old_sale_in_stripe(stack)  # RefCampaign never had it: 404 NOT_FOUND
    event = charge_refunded(intent, 3000)
    stack.stripe_event(event)
    item = stack.wait_status(f"refund_{event['id']}", "dead")
    assert (item["reason"], item["last_status"], item["external_id"]) == (
        "not_found",
        "404",
        session,
    )
    assert len(stack.refcampaign.refund_requests()) == 1  # terminal: no retry


def test_a_payment_nobody_knows_is_recorded_and_not_sent(stack: Stack) -> None:
    event = charge_refunded(new_id("pi_unknown_"), 3000)
    stack.stripe_event(event)
    item = stack.wait_status(f"refund_{event['id']}", "unknown_payment")
    assert item["reason"] == "unknown_payment"
    assert stack.refcampaign.refund_requests() == []
    counts = json.loads(stack.cli("status", "--json").stdout)["refunds"]
    assert counts["unknown_payment"] >= 1


def test_the_refund_endpoint_failing_with_5xx_is_retried_until_it_answers(stack: Stack) -> None:
    session, intent = sale(stack)
    stack.refcampaign.script_refunds(Scripted(503), Scripted(502))
    stack.stripe_event(charge_refunded(intent, 3000))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund["externalId"] == session
    assert len(stack.refcampaign.refund_requests()) == 3


def test_a_4xx_dead_letters_the_refund_and_dlq_replay_sends_it(stack: Stack) -> None:
    session, intent = sale(stack)
    stack.refcampaign.script_refunds(Scripted(422, '{"success":false}'))
    event = charge_refunded(intent, 1200)
    stack.stripe_event(event)
    item_id = f"refund_{event['id']}"
    stack.wait_status(item_id, "dead")
    listed = json.loads(stack.cli("dlq", "list", "--json").stdout)
    [entry] = [e for e in listed if e["id"] == item_id]
    assert entry["kind"] == "refund"
    assert entry["externalId"] == session
    assert entry["reason"] == "invalid_payload"
    assert entry["payload"] == {"externalId": session, "amount": 1200, "reason": "refund"}
    replayed = stack.cli("dlq", "replay", item_id)
    assert replayed.returncode == 0, replayed.stderr
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "amount": 1200, "reason": "refund"}


def test_a_replayed_sale_takes_its_refunds_with_it(stack: Stack) -> None:
    session, intent = new_id("cs_test_"), new_id("pi_")
    stack.refcampaign.per_conversion[session] = Scripted(422, '{"success":false}')
    stack.stripe_event(checkout(session, intent))
    stack.wait_status(session, "dead")
    event = charge_refunded(intent, 3000)
    stack.stripe_event(event)
    stack.wait_status(f"refund_{event['id']}", "waiting")
    del stack.refcampaign.per_conversion[session]
    assert stack.cli("dlq", "replay", session).returncode == 0
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "reason": "refund"}


def test_an_unattributed_sale_is_never_clawed_back(stack: Stack) -> None:
    session, intent = new_id("cs_test_"), new_id("pi_")
    event = checkout(session, intent)
    obj = event["data"]["object"]
    obj.update(
        metadata={},
        customer=None,  # memory would attribute it from the customer's earlier sales
        customer_details=None,
        customer_email=None,
        client_reference_id=None,
    )
    stack.stripe_event(event)
    refund = charge_refunded(intent, 3000)
    stack.stripe_event(refund)
    item = stack.wait_status(f"refund_{refund['id']}", "not_sent")
    assert item["reason"] == "not_sent"
    assert stack.refcampaign.requests == []


# --- PayPal IPN ------------------------------------------------------------------------------


def ipn_sale(txn_id: str, gross: str = "20.00") -> bytes:
    """A web_accept sale, shaped like PayPal's IPN simulator's (tests/samples/paypal)."""
    return urlencode(
        {
            "mc_gross": gross,
            "payment_date": "20:12:59 Jan 13, 2009 PST",
            "payment_status": "Completed",
            "charset": "windows-1252",
            "custom": "rcs_ipn_refund",
            "payer_email": "buyer@example.com",
            "payer_id": "LPLWNMTBWMFAY",
            "txn_id": txn_id,
            "receiver_email": "seller@paypalsandbox.com",
            "txn_type": "web_accept",
            "mc_currency": "USD",
            "ipn_track_id": secrets.token_hex(6),
        }
    ).encode()


def ipn_refund(
    parent: str, gross: str, status: str = "Refunded", txn_id: str | None = None
) -> bytes:
    """PayPal's refund (or reversal) IPN of the sale `parent`: no txn_type, mc_gross negative."""
    return urlencode(
        {
            "mc_gross": f"-{gross}",
            "payment_status": status,
            "charset": "windows-1252",
            "payment_date": "08:12:59 Jan 14, 2009 PST",
            "parent_txn_id": parent,
            "txn_id": txn_id or new_id("RF").upper(),
            "reason_code": "refund" if status == "Refunded" else "chargeback",
            "receiver_email": "seller@paypalsandbox.com",
            "mc_currency": "USD",
            "payer_id": "LPLWNMTBWMFAY",
            "ipn_track_id": secrets.token_hex(6),
        }
    ).encode()


def ipn_delivered(stack: Stack, gross: str = "20.00") -> str:
    txn = new_id("TX").upper()
    stack.ipn(ipn_sale(txn, gross))
    wait_until(lambda: txn in stack.refcampaign.conversions, timeout=20, what="the IPN sale")
    return txn


def test_ipn_refunds_full_partial_and_reversal(stack: Stack) -> None:
    full, partial, reversed_ = (ipn_delivered(stack) for _ in range(3))
    stack.ipn(ipn_refund(full, "20.00"))
    stack.ipn(ipn_refund(partial, "5.25"))
    stack.ipn(ipn_refund(reversed_, "20.00", "Reversed"))
    got = {r["externalId"]: r for r in stack.refcampaign.wait_for_refunds(3)}
    assert got[full] == {"externalId": full, "reason": "refund"}
    assert got[partial] == {"externalId": partial, "amount": 525, "reason": "refund"}
    assert got[reversed_] == {"externalId": reversed_, "reason": "chargeback"}


def test_a_refund_that_arrives_before_its_sale_waits_for_it(stack: Stack) -> None:
    # Stripe: the charge's refund webhook before the checkout's (a resend, a slow delivery).
    session, intent = new_id("cs_test_"), new_id("pi_")
    stack.stripe_event(charge_refunded(intent, 1000))
    time.sleep(1.5)
    stack.stripe_event(checkout(session, intent))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "amount": 1000, "reason": "refund"}
    paths = [r["path"] for r in stack.refcampaign.requests]
    assert paths == ["/api/v1/conversions/postback", "/api/v1/conversions/refund"]
    # PayPal: the refund's IPN verified before the sale's. It waits for the sale (up to
    # DELIVERY_MAX_AGE), and goes the moment the sale is delivered.
    txn, refund_txn = new_id("TX").upper(), new_id("RF").upper()
    stack.ipn(ipn_refund(txn, "5.00", txn_id=refund_txn))
    stack.wait_status(f"refund_paypal_{refund_txn}", "waiting")
    stack.ipn(ipn_sale(txn))
    got = stack.refcampaign.wait_for_refunds(2, timeout=10)
    assert got[1] == {"externalId": txn, "amount": 500, "reason": "refund"}


# --- PayPal REST webhooks --------------------------------------------------------------------


def rest_capture(capture_id: str, value: str = "100.00") -> dict[str, Any]:
    return {
        "id": new_id("WH-CAP-"),
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "resource_type": "capture",
        "resource": {
            "id": capture_id,
            "status": "COMPLETED",
            "amount": {"currency_code": "USD", "value": value},
            "custom_id": "rcs_rest_refund",
            "create_time": "2026-12-03T10:18:45Z",
        },
    }


def rest_capture_refund(capture_id: str, value: str) -> dict[str, Any]:
    """PayPal's published PAYMENT.CAPTURE.REFUNDED sample, of capture `capture_id`."""
    event = json.loads(paypal_webhook_fixture("solidus__payment_capture_refunded_v2.json"))
    refund_id = new_id("1Y1").upper()
    event["id"] = new_id("WH-REF-")
    resource = event["resource"]
    resource.update(id=refund_id, amount={"currency_code": "USD", "value": value})
    resource["links"] = [
        {"href": f"https://api.paypal.com/v2/payments/refunds/{refund_id}", "rel": "self"},
        {"href": f"https://api.paypal.com/v2/payments/captures/{capture_id}", "rel": "up"},
    ]
    return dict(event)


def test_a_rest_capture_refund_is_found_through_its_up_link(stack: Stack) -> None:
    capture = new_id("7NW").upper()
    stack.paypal_event(rest_capture(capture))
    wait_until(lambda: capture in stack.refcampaign.conversions, timeout=20, what="the capture")
    stack.paypal_event(rest_capture_refund(capture, "40.00"))
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": capture, "amount": 4000, "reason": "refund"}


# --- catch-up --------------------------------------------------------------------------------


def test_a_refund_only_catch_up_finds_is_sent(stack: Stack) -> None:
    session, intent = sale(stack)
    missed = charge_refunded(intent, 3000)  # its webhook never arrived
    stack.stripe.add([missed])
    result = stack.cli("catchup", "stripe", "--since", "1h", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["refunds"] == 1
    [refund] = stack.refcampaign.wait_for_refunds(1)
    assert refund == {"externalId": session, "reason": "refund"}
