"""The refund's gate in a real Redis (bridge/delivery/refunds.py, lua/refund_gate.lua): its
conversion found by memory, never before that conversion is delivered, a Stripe charge's
running total sent as increases in any order, decided once, and ended when it must not go."""

from __future__ import annotations

import json
import time

import redis

from bridge.conversion import Conversion, Handles
from bridge.delivery import memory, refunds
from bridge.delivery.intake import accept_refund
from bridge.delivery.keys import REFUNDS_WAITING
from bridge.delivery.ledger import Ledger
from bridge.refund import Refund
from config import Settings

SETTINGS = Settings()  # no STRIPE_API_KEY: a payment memory does not know is unknown
LATER = float("inf")  # no look-up ever runs out of time here


def recorded_sale(ledger: Ledger, external_id: str, intent: str, sent: bool = True) -> None:
    """A Stripe checkout recorded as the intake records one (pending), or unattributed."""
    sale = Conversion(
        external_id,
        "SALE",
        3000,
        "USD",
        session_id="rcs_gate" if sent else None,
        handles=Handles(payment=(f"stripe:pi:{intent}",)),
    )
    if not sent:
        ledger.memory.remember(sale, sent=False)
        return
    fields = {"kind": "conversion", "external_id": external_id, "payload": "{}"}
    fields["payload"] = json.dumps(sale.to_payload())
    ledger.enqueue(
        external_id, f"rb:seen:test:{external_id}", fields, remember=memory.entries(sale)
    )


def deliver(ledger: Ledger, external_id: str) -> None:
    [claim] = ledger.claim([external_id], lease=30).claims
    assert ledger.mark_delivered(claim, {"status": "delivered"}, 0.1)


def charge_refund(key: str, intent: str, refunded: int) -> Refund:
    return Refund(
        key=key,
        reason="refund",
        handles=(f"stripe:ch:ch_{intent}", f"stripe:pi:{intent}"),
        charge=f"ch_{intent}",
        charge_refunded=refunded,
        charge_amount=3000,
        payment_intent=intent,
    )


def attempt(
    ledger: Ledger, refund: Refund, settings: Settings = SETTINGS, received_at: float = 0.0
) -> refunds.Prepared:
    """One attempt's gate, as a worker runs it: record (first time), claim, prepare. A refund
    received at 0 (1970) waited long enough for any sale with no record."""
    accept_refund(ledger, refund, provider="stripe", event_id=refund.key, received_at=received_at)
    claimed = ledger.claim([refund.item_id], lease=30)
    if not claimed.claims:
        return claimed.words[refund.item_id]
    [claim] = claimed.claims
    return refunds.prepare(ledger, settings, claim, LATER)


def test_a_refund_waits_for_its_pending_sale_and_is_due_the_moment_it_is_delivered(
    redis_url: str,
) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_1", "pi_1")
    refund = charge_refund("evt_1", "pi_1", 3000)
    assert attempt(ledger, refund) == "waiting"
    assert ledger.get(refund.item_id)["status"] == "waiting"  # type: ignore[index]
    assert ledger.redis.sismember(REFUNDS_WAITING, "rb:item:" + refund.item_id)
    deliver(ledger, "cs_1")
    fresh, _ = ledger.sweep(100)
    assert refund.item_id in fresh
    [claim] = ledger.claim([refund.item_id], lease=30).claims
    assert refunds.prepare(ledger, SETTINGS, claim, LATER) == refunds.Send(
        {"externalId": "cs_1", "reason": "refund"}
    )
    assert ledger.redis.scard(REFUNDS_WAITING) == 0


def test_a_charge_running_total_sends_each_increase_once_in_any_order(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_2", "pi_2")
    deliver(ledger, "cs_2")
    second = attempt(ledger, charge_refund("evt_b", "pi_2", 2000))
    first = attempt(ledger, charge_refund("evt_a", "pi_2", 500))  # older, arrives late
    rest = attempt(ledger, charge_refund("evt_c", "pi_2", 3000))
    assert second == refunds.Send({"externalId": "cs_2", "amount": 2000, "reason": "refund"})
    assert first == "nothing_new"
    assert rest == refunds.Send({"externalId": "cs_2", "amount": 1000, "reason": "refund"})


def test_a_decided_refund_sends_the_same_body_on_every_attempt(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_3", "pi_3")
    deliver(ledger, "cs_3")
    refund = charge_refund("evt_3", "pi_3", 1200)
    accept_refund(ledger, refund, provider="stripe", event_id="evt_3", received_at=0.0)
    [claim] = ledger.claim([refund.item_id], lease=30).claims
    sent = refunds.prepare(ledger, SETTINGS, claim, LATER)
    assert sent == refunds.Send({"externalId": "cs_3", "amount": 1200, "reason": "refund"})
    assert ledger.schedule_retry(claim, 0, "", {}, "503")  # RefCampaign answered 503
    [again] = ledger.claim([refund.item_id], lease=30).claims
    assert refunds.prepare(ledger, SETTINGS, again, LATER) == sent


def test_a_refund_of_an_unattributed_sale_or_an_unknown_payment_is_not_sent(
    redis_url: str,
) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_4", "pi_4", sent=False)
    assert attempt(ledger, charge_refund("evt_4", "pi_4", 3000)) == "not_sent"
    assert attempt(ledger, charge_refund("evt_5", "pi_unknown", 3000)) == "unknown_payment"
    assert ledger.get("refund_evt_4")["status"] == "not_sent"  # type: ignore[index]
    assert ledger.get("refund_evt_5")["status"] == "unknown_payment"  # type: ignore[index]


def test_purging_a_dead_lettered_sale_ends_its_waiting_refunds(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_6", "pi_6")
    [claim] = ledger.claim(["cs_6"], lease=30).claims
    assert ledger.dead_letter(claim, "", {"reason": "invalid_payload"}, "422")
    refund = charge_refund("evt_6", "pi_6", 3000)
    assert attempt(ledger, refund) == "waiting"
    assert ledger.purge(["cs_6"]) == ["cs_6"]
    item = ledger.get(refund.item_id) or {}
    assert (item["status"], item["reason"]) == ("not_sent", "sale_purged")
    assert ledger.redis.scard(REFUNDS_WAITING) == 0


def test_a_paypal_refund_of_the_whole_sale_sends_no_amount(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    sale = Conversion(
        "TX1", "SALE", 2000, "USD", session_id="rcs", handles=Handles(payment=("paypal:txn:TX1",))
    )
    fields = {"kind": "conversion", "payload": json.dumps(sale.to_payload())}
    ledger.enqueue("TX1", "rb:seen:test:TX1", fields, remember=memory.entries(sale))
    deliver(ledger, "TX1")
    whole = Refund("paypal_R1", "refund", ("paypal:txn:TX1",), "TX1", 2000, "USD")
    part = Refund("paypal_R2", "chargeback", ("paypal:txn:TX1",), "TX1", 550, "USD")
    assert attempt(ledger, whole) == refunds.Send({"externalId": "TX1", "reason": "refund"})
    assert attempt(ledger, part) == refunds.Send(
        {"externalId": "TX1", "amount": 550, "reason": "chargeback"}
    )


def test_with_refund_clawbacks_off_a_refund_is_answered_and_ignored(redis_url: str) -> None:
    from bridge import create_app
    from tests.fixtures import stripe_fixture
    from tests.signing import SECRET, stripe_body, stripe_headers

    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "STRIPE_WEBHOOK_SECRET": SECRET, "REFUND_CLAWBACKS": "off"}
    )
    client = create_app(settings).test_client()
    event = stripe_fixture("srm__charge.refunded.json")
    body = stripe_body(event)
    answer = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert answer.status_code == 200
    ledger = Ledger(redis.Redis.from_url(redis_url))
    assert ledger.get(f"refund_{event['id']}") is None
    counters = {k.decode(): v for k, v in ledger.redis.hgetall("rb:stats").items()}
    field = "webhooks:outcome=ignored,provider=stripe,reason=refund_clawbacks_off"
    assert counters.get(field) == b"1", counters


def paypal_sale(ledger: Ledger, txn: str, amount: int = 2000) -> None:
    sale = Conversion(
        txn,
        "SALE",
        amount,
        "USD",
        session_id="rcs",
        handles=Handles(payment=(f"paypal:txn:{txn}",)),
    )
    fields = {"kind": "conversion", "payload": json.dumps(sale.to_payload())}
    ledger.enqueue(txn, f"rb:seen:test:{txn}", fields, remember=memory.entries(sale))


def test_a_refund_whose_named_sale_has_no_record_yet_waits_for_it(redis_url: str) -> None:
    # The refund's IPN verified before its sale's: it waits for the sale, not a grace.
    ledger = Ledger(redis.Redis.from_url(redis_url))
    refund = Refund("paypal_R9", "refund", ("paypal:txn:TX9",), "TX9", 500, "USD")
    assert attempt(ledger, refund, received_at=time.time()) == "waiting"
    assert ledger.sweep(100) == ([], [])  # parked for DELIVERY_MAX_AGE, not due
    paypal_sale(ledger, "TX9")
    ledger.sweep(100)
    deliver(ledger, "TX9")
    assert ledger.sweep(100)[0] == [refund.item_id]
    [claim] = ledger.claim([refund.item_id], lease=30).claims
    assert refunds.prepare(ledger, SETTINGS, claim, LATER) == refunds.Send(
        {"externalId": "TX9", "amount": 500, "reason": "refund"}
    )


def test_a_refund_whose_sale_never_comes_is_sent_when_its_wait_runs_out(redis_url: str) -> None:
    # A sale made before the bridge was installed: RefCampaign may have it (404 when not).
    ledger = Ledger(redis.Redis.from_url(redis_url))
    settings = Settings(delivery_max_age=1.0)
    refund = Refund("paypal_R10", "chargeback", ("paypal:txn:TX10",), "TX10", 700, "USD")
    assert attempt(ledger, refund, settings, received_at=time.time()) == "waiting"
    time.sleep(1.2)
    assert ledger.sweep(100)[0] == [refund.item_id]
    [claim] = ledger.claim([refund.item_id], lease=30).claims
    assert refunds.prepare(ledger, settings, claim, LATER) == refunds.Send(
        {"externalId": "TX10", "amount": 700, "reason": "chargeback"}
    )
    assert ledger.redis.scard(REFUNDS_WAITING) == 0


def test_a_lost_dispute_after_a_partial_refund_claws_back_only_the_rest(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_11", "pi_11")
    deliver(ledger, "cs_11")
    assert attempt(ledger, charge_refund("evt_11", "pi_11", 1000)) == refunds.Send(
        {"externalId": "cs_11", "amount": 1000, "reason": "refund"}
    )
    dispute = Refund(
        "dp_11",
        "chargeback",
        ("stripe:ch:ch_pi_11", "stripe:pi:pi_11"),
        charge="ch_pi_11",
        dispute_amount=3000,
        payment_intent="pi_11",
    )
    assert attempt(ledger, dispute) == refunds.Send(
        {"externalId": "cs_11", "amount": 2000, "reason": "chargeback"}
    )
    # And a refund of the same charge after it finds nothing left to claw back.
    assert attempt(ledger, charge_refund("evt_12", "pi_11", 3000)) == "nothing_new"


def test_a_refund_of_a_purged_sale_arriving_after_the_purge_is_not_sent(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_13", "pi_13")
    [claim] = ledger.claim(["cs_13"], lease=30).claims
    assert ledger.dead_letter(claim, "", {"reason": "invalid_payload"}, "422")
    assert ledger.purge(["cs_13"]) == ["cs_13"]
    assert attempt(ledger, charge_refund("evt_13", "pi_13", 3000)) == "sale_purged"
    assert (ledger.get("refund_evt_13") or {})["status"] == "not_sent"


def test_an_unattributed_copy_of_a_sent_sale_does_not_mark_it_unsent(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    recorded_sale(ledger, "cs_14", "pi_14")  # sent: its record says so
    recorded_sale(ledger, "cs_14", "pi_14", sent=False)  # another event, no affiliate
    deliver(ledger, "cs_14")
    assert attempt(ledger, charge_refund("evt_14", "pi_14", 3000)) == refunds.Send(
        {"externalId": "cs_14", "reason": "refund"}
    )
