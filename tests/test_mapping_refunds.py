"""Refunds and chargebacks (SPEC, Refunds and chargebacks): what each provider event maps to.

Real samples from `tests/samples/` (SOURCES.md there say where each came from); the rows no
public sample shows are those samples with the field the row reads changed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bridge.conversion import Conversion, Ignored, MappingResult, Rejected
from bridge.providers.paypal.ipn import map_ipn, parse_ipn
from bridge.providers.paypal.webhooks import map_webhook_event, parse_event
from bridge.providers.stripe.mapping import EVENT_TYPES, map_stripe_event
from bridge.refund import Refund, payload
from tests.fixtures import paypal_fixture, paypal_webhook_fixture, stripe_fixture

# --- the samples ---------------------------------------------------------------------------

STRIPE_REFUND = "srm__charge.refunded.json"  # ch_000…, 100 of 100 usd refunded, no intent
STRIPE_CHARGE = "srm__charge.succeeded.json"  # ch_000…, 2000 usd, payment_intent pi_000…
STRIPE_CHECKOUT = "srm__checkout.session.completed.json"  # paid by pi_000…
STRIPE_DISPUTE = "stripe_openapi__charge.dispute.closed.json"  # lost, of ch_1Pgafu…, 1000 usd
CHARGE_ID = "ch_000000000000000000000000"
INTENT_ID = "pi_000000000000000000000000"
DISPUTE_ID = "dp_1Pgc71B7WZ01zgkWMevJiAUx"
DISPUTED_CHARGE = "ch_1PgafuB7WZ01zgkWXYmPNZs8"

IPN_REFUND = paypal_fixture("boxbilling__refunded_subscr_payment.txt")  # -5.95 USD
IPN_SALE = paypal_fixture("boxbilling__subscr_payment_completed.txt")  # the sale it refunds
IPN_REFUND_TXN = "33R88456DU653693H"
IPN_SALE_TXN = "6SR99524AP993094V"
IPN_RECEIVER = "clients@boxbilling.org"

CAPTURE_REFUND_RAW = paypal_webhook_fixture("solidus__payment_capture_refunded_v2.json")
CAPTURE_REFUND_V1_RAW = paypal_webhook_fixture("solidus__payment_capture_refunded_v1.json")
SALE_REFUND_RAW = paypal_webhook_fixture("jsonx__payment_sale_refunded.json")
CAPTURE_COMPLETED_RAW = paypal_webhook_fixture("rootcompany__payment_capture_completed.json")
CAPTURE_REFUND_ID = "1Y107995YT783435V"
REFUNDED_CAPTURE = "0JF852973C016714D"
CAPTURE_URL = f"https://api.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}"
SALE_REFUND_ID = "29B43325P49508437"
REFUNDED_SALE = "02399573KS095945W"


def stripe_event(name: str, type: str | None = None, **fields: Any) -> dict[str, Any]:
    """A fresh copy of a Stripe sample, its type and `data.object` fields replaced."""
    event = copy.deepcopy(stripe_fixture(name))
    if type is not None:
        event["type"] = type
    event["data"]["object"].update(fields)
    return event


def charge_refunded(**fields: Any) -> dict[str, Any]:
    """The real `charge.succeeded` charge (2000 usd, with an intent) as a `charge.refunded`."""
    return stripe_event(STRIPE_CHARGE, "charge.refunded", **fields)


def dispute_closed(**fields: Any) -> dict[str, Any]:
    return stripe_event(STRIPE_DISPUTE, **fields)


def ipn(raw: bytes, **changes: str | None) -> dict[str, str]:
    """The parsed IPN with fields set to the given (form-escaped) values, appended, or removed."""
    pairs = raw.split(b"&")
    for name, value in changes.items():
        key = name.encode("ascii") + b"="
        pairs = [pair for pair in pairs if not pair.startswith(key)]
        if value is not None:
            pairs.append(key + value.encode("ascii"))
    return parse_ipn(b"&".join(pairs))


def map_fields(fields: dict[str, str], receivers: tuple[str, ...] = ()) -> MappingResult:
    return map_ipn(fields, recurring=True, receiver_emails=receivers)


def rest_event(raw: bytes, event_type: str | None = None, **resource: Any) -> dict[str, Any]:
    """The parsed REST event, its type and `resource` fields replaced (None removes one)."""
    event = parse_event(raw)
    assert event is not None
    if event_type is not None:
        event["event_type"] = event_type
    for key, value in resource.items():
        if value is None:
            event["resource"].pop(key, None)
        else:
            event["resource"][key] = value
    return event


def up_link(href: str) -> list[dict[str, str]]:
    """A refund's `links` with `rel: up` to `href` (after its `self` link, as PayPal lists it)."""
    return [
        {"href": f"https://api.paypal.com/v2/payments/refunds/{CAPTURE_REFUND_ID}", "rel": "self"},
        {"href": href, "rel": "up", "method": "GET"},
    ]


def outcome(result: MappingResult) -> tuple[str, str]:
    """Ignored / Rejected as (kind, reason); anything else as its type's name."""
    if isinstance(result, Ignored | Rejected):
        return (type(result).__name__, result.reason)
    return (type(result).__name__, "")


def ignored(reason: str) -> tuple[str, str]:
    return ("Ignored", reason)


def rejected(reason: str) -> tuple[str, str]:
    return ("Rejected", reason)


def refund_of(result: MappingResult) -> Refund:
    assert isinstance(result, Refund), result
    return result


# --- every sample, in full -----------------------------------------------------------------


def test_the_stripe_charge_refunded_sample_is_a_whole_refund_of_its_charge() -> None:
    assert map_stripe_event(stripe_fixture(STRIPE_REFUND), recurring=True) == Refund(
        key="evt_000000000000000000000000",
        reason="refund",
        handles=(f"stripe:ch:{CHARGE_ID}",),
        external_id=None,
        amount=None,
        currency="USD",
        charge=CHARGE_ID,
        charge_refunded=100,
        charge_amount=100,
        payment_intent=None,
        invoice=None,
    )


def test_the_stripe_lost_dispute_sample_is_a_chargeback_of_its_charge() -> None:
    assert map_stripe_event(stripe_fixture(STRIPE_DISPUTE), recurring=True) == Refund(
        key=DISPUTE_ID,
        reason="chargeback",
        handles=(f"stripe:ch:{DISPUTED_CHARGE}",),
        external_id=None,
        amount=None,  # the sale is lost: what refunds left of its charge (all, without any)
        currency="USD",
        charge=DISPUTED_CHARGE,
        charge_refunded=None,
        charge_amount=None,
        dispute_amount=1000,
        payment_intent=None,  # the sample's charge was made without an intent
        invoice=None,
    )


def test_the_ipn_refund_sample_refunds_its_parent_txn() -> None:
    assert map_fields(parse_ipn(IPN_REFUND)) == Refund(
        key=f"paypal_{IPN_REFUND_TXN}",
        reason="refund",
        handles=(f"paypal:txn:{IPN_SALE_TXN}",),
        external_id=IPN_SALE_TXN,
        amount=595,  # mc_gross=-5.95
        currency="USD",
    )


def test_the_rest_capture_refund_sample_refunds_the_capture_of_its_up_link() -> None:
    assert map_webhook_event(rest_event(CAPTURE_REFUND_RAW), recurring=True) == Refund(
        key=f"paypal_{CAPTURE_REFUND_ID}",
        reason="refund",
        handles=(f"paypal:txn:{REFUNDED_CAPTURE}",),
        external_id=REFUNDED_CAPTURE,
        amount=99,  # amount.value "0.99", not seller_payable_breakdown.total_refunded_amount
        currency="USD",
    )


def test_the_rest_sale_refund_sample_refunds_its_sale_id() -> None:
    assert map_webhook_event(rest_event(SALE_REFUND_RAW), recurring=True) == Refund(
        key=f"paypal_{SALE_REFUND_ID}",
        reason="refund",
        handles=(f"paypal:txn:{REFUNDED_SALE}",),
        external_id=REFUNDED_SALE,
        amount=1499,  # amount.total "14.99", positive in this (live) event
        currency="USD",
    )


def test_a_v1_capture_refund_is_read_by_its_capture_id_and_total() -> None:
    # PayPal's v1 Payments event (resource_type "capture"): `capture_id` and a `rel: capture`
    # link to /v1/payments/capture/…, no `up` link, `amount.total` "-0.15".
    result = map_webhook_event(rest_event(CAPTURE_REFUND_V1_RAW), recurring=True)
    assert result == Refund(
        key="paypal_8VC964970N548345V",
        reason="refund",
        handles=("paypal:txn:5LK72275CG489890D",),
        external_id="5LK72275CG489890D",
        amount=15,
        currency="USD",
    )


# --- Stripe charge.refunded ----------------------------------------------------------------


def test_a_partial_charge_refund_carries_the_running_total_and_the_charge_amount() -> None:
    refund = refund_of(map_stripe_event(charge_refunded(amount_refunded=500), recurring=True))
    assert (refund.charge, refund.charge_refunded, refund.charge_amount) == (CHARGE_ID, 500, 2000)
    # What to send is the increase over what was already sent: the worker's to work out.
    assert refund.amount is None and refund.external_id is None


def test_a_full_charge_refund_has_amount_refunded_equal_to_amount() -> None:
    refund = refund_of(map_stripe_event(charge_refunded(amount_refunded=2000), recurring=True))
    assert (refund.charge_refunded, refund.charge_amount) == (2000, 2000)


def test_a_charge_refund_is_named_by_its_event_and_found_by_charge_and_intent() -> None:
    event = charge_refunded(amount_refunded=500, invoice="in_000000000000000000000000")
    refund = refund_of(map_stripe_event(event, recurring=False))
    assert refund.key == event["id"] and refund.item_id == f"refund_{event['id']}"
    assert refund.reason == "refund"
    assert refund.handles == (
        f"stripe:ch:{CHARGE_ID}",
        f"stripe:pi:{INTENT_ID}",
        "stripe:in:in_000000000000000000000000",
    )
    assert (refund.payment_intent, refund.invoice) == (INTENT_ID, "in_000000000000000000000000")


def test_an_expanded_payment_intent_is_read_by_its_id() -> None:
    expanded = {"id": INTENT_ID, "object": "payment_intent", "amount": 2000}
    event = charge_refunded(amount_refunded=2000, payment_intent=expanded)
    refund = refund_of(map_stripe_event(event, recurring=True))
    assert refund.payment_intent == INTENT_ID
    assert f"stripe:pi:{INTENT_ID}" in refund.handles


def test_an_expanded_invoice_is_read_by_its_id() -> None:
    event = charge_refunded(amount_refunded=2000, invoice={"id": "in_1", "object": "invoice"})
    assert refund_of(map_stripe_event(event, recurring=True)).invoice == "in_1"


def test_a_charge_refund_shares_a_handle_with_the_checkout_that_sold_it() -> None:
    sold = map_stripe_event(stripe_event(STRIPE_CHECKOUT), recurring=True)
    assert isinstance(sold, Conversion)
    refund = refund_of(map_stripe_event(charge_refunded(amount_refunded=500), recurring=True))
    assert f"stripe:pi:{INTENT_ID}" in set(refund.handles) & set(sold.handles.payment)


def test_a_charge_refund_shares_a_handle_with_the_renewal_invoice_it_paid() -> None:
    # An invoice before API 2025-03-31 names its payment_intent and charge itself.
    renewal = stripe_event(
        "srm__invoice.paid.json", billing_reason="subscription_cycle", metadata={"cid": "c1"}
    )
    sold = map_stripe_event(renewal, recurring=True)
    assert isinstance(sold, Conversion)
    event = charge_refunded(amount_refunded=500, invoice=sold.external_id)
    refund = refund_of(map_stripe_event(event, recurring=True))
    assert set(refund.handles) == set(sold.handles.payment) & set(refund.handles)
    assert len(refund.handles) == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"amount_refunded": True},
        {"amount_refunded": False},
        {"amount_refunded": -1},
        {"amount_refunded": "500"},
        {"amount_refunded": 5.0},
        {"amount_refunded": None},
        {"amount": True},
        {"amount": -2000},
        {"amount": "2000"},
        {"amount": None},
        {"amount_refunded": 2001},
        {"amount": 0, "amount_refunded": 1},
        # Past what Lua's numbers hold exactly: the running total would break.
        {"amount": 10**400, "amount_refunded": 10**399},
        {"amount": 10**12 + 1, "amount_refunded": 1},
    ],
)
def test_a_malformed_amount_is_ignored_as_a_malformed_object(fields: dict[str, Any]) -> None:
    result = map_stripe_event(charge_refunded(**fields), recurring=True)
    assert outcome(result) == ignored("malformed_object")


def test_nothing_refunded_is_ignored() -> None:
    result = map_stripe_event(charge_refunded(amount_refunded=0), recurring=True)
    assert outcome(result) == ignored("nothing_refunded")


@pytest.mark.parametrize("charge_id", [None, "", "   ", 42, "c" * 256])
def test_a_charge_without_a_usable_id_is_a_malformed_object(charge_id: object) -> None:
    event = charge_refunded(amount_refunded=500, id=charge_id)
    assert outcome(map_stripe_event(event, recurring=True)) == ignored("malformed_object")


# --- Stripe charge.dispute.closed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("won", ignored("dispute_won")),
        ("warning_closed", ignored("dispute_warning_closed")),
        ("lost", ("Refund", "")),
        ("needs response", ignored("dispute_other")),
        (None, ignored("dispute_other")),
    ],
)
def test_only_a_lost_dispute_is_a_chargeback(status: object, expected: object) -> None:
    assert outcome(map_stripe_event(dispute_closed(status=status), recurring=True)) == expected


def test_a_lost_dispute_is_a_whole_chargeback_found_by_charge_and_intent() -> None:
    event = dispute_closed(payment_intent={"id": INTENT_ID, "object": "payment_intent"})
    refund = refund_of(map_stripe_event(event, recurring=True))
    assert (refund.key, refund.reason, refund.amount) == (DISPUTE_ID, "chargeback", None)
    assert refund.handles == (f"stripe:ch:{DISPUTED_CHARGE}", f"stripe:pi:{INTENT_ID}")
    assert refund.payment_intent == INTENT_ID


@pytest.mark.parametrize("charge", [None, "", {"object": "charge"}])
def test_a_lost_dispute_without_a_charge_is_a_malformed_object(charge: object) -> None:
    result = map_stripe_event(dispute_closed(charge=charge), recurring=True)
    assert outcome(result) == ignored("malformed_object")


def test_the_stripe_event_types_include_refunds_and_disputes() -> None:
    assert {"charge.refunded", "charge.dispute.closed"} <= set(EVENT_TYPES)


# --- PayPal IPN ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [("Refunded", "refund"), ("Reversed", "chargeback")])
def test_an_ipn_refund_or_reversal_refunds_its_parent_txn(status: str, reason: str) -> None:
    fields = ipn(IPN_REFUND, payment_status=status, mc_gross="-10.00")
    refund = refund_of(map_fields(fields))
    assert (refund.reason, refund.external_id, refund.amount) == (reason, IPN_SALE_TXN, 1000)


@pytest.mark.parametrize(
    ("mc_gross", "currency", "expected"),
    [
        ("-10.00", "USD", 1000),
        ("10.00", "USD", 1000),
        ("-0.01", "EUR", 1),
        ("-1000", "JPY", 1000),
        ("-1000.00", "JPY", 1000),
        ("-5000", "KRW", 5000),
        ("-1.234", "KWD", 1234),
        ("-19.99", "usd", 1999),
    ],
)
def test_an_ipn_refund_amount_is_minus_mc_gross_in_exact_minor_units(
    mc_gross: str, currency: str, expected: int
) -> None:
    fields = ipn(IPN_REFUND, mc_gross=mc_gross, mc_currency=currency)
    refund = refund_of(map_fields(fields))
    assert (refund.amount, refund.currency) == (expected, currency.upper())


@pytest.mark.parametrize(
    ("mc_gross", "currency", "expected"),
    [
        ("-1000.5", "JPY", rejected("inexact_amount")),
        ("-10.001", "USD", rejected("inexact_amount")),
        ("-0.00", "USD", rejected("bad_amount")),
        ("--10.00", "USD", rejected("bad_amount")),
        ("-1e3", "USD", rejected("bad_amount")),
        ("", "USD", rejected("bad_amount")),
        ("-10.00", "", rejected("bad_currency")),
    ],
)
def test_an_ipn_refund_amount_that_is_not_exact_is_rejected(
    mc_gross: str, currency: str, expected: object
) -> None:
    assert outcome(map_fields(ipn(IPN_REFUND, mc_gross=mc_gross, mc_currency=currency))) == (
        expected
    )


@pytest.mark.parametrize("parent", [None, "", "+++"])
def test_an_ipn_refund_without_parent_txn_id_is_rejected(parent: str | None) -> None:
    result = map_fields(ipn(IPN_REFUND, parent_txn_id=parent))
    assert outcome(result) == rejected("missing_parent_txn_id")


def test_an_ipn_refund_without_its_own_txn_id_is_rejected() -> None:
    assert outcome(map_fields(ipn(IPN_REFUND, txn_id=None))) == rejected("missing_txn_id")


@pytest.mark.parametrize("txn_type", [None, "web_accept", "subscr_payment", "cart", "adjustment"])
def test_an_ipn_refund_is_a_refund_whatever_its_txn_type(txn_type: str | None) -> None:
    fields = ipn(IPN_REFUND, txn_type=txn_type)
    for recurring in (True, False):
        result = map_ipn(fields, recurring=recurring, receiver_emails=())
        assert refund_of(result).external_id == IPN_SALE_TXN


@pytest.mark.parametrize("txn_type", [None, "web_accept"])
def test_a_canceled_reversal_is_ignored_for_a_person_to_act_on(txn_type: str | None) -> None:
    changes = {"payment_status": "Canceled_Reversal", "mc_gross": "10.00", "txn_type": txn_type}
    fields = ipn(IPN_REFUND, **changes)
    assert outcome(map_fields(fields)) == ignored("canceled_reversal")


def test_an_ipn_refund_for_a_foreign_receiver_is_rejected() -> None:
    fields = parse_ipn(IPN_REFUND)
    assert outcome(map_fields(fields, ("sales@example.com",))) == rejected("foreign_receiver")
    assert isinstance(map_fields(fields, ("sales@example.com", IPN_RECEIVER.upper())), Refund)


def test_an_ipn_refund_shares_a_handle_with_the_sale_it_refunds() -> None:
    sold = map_fields(parse_ipn(IPN_SALE))
    assert isinstance(sold, Conversion) and sold.external_id == IPN_SALE_TXN
    refund = refund_of(map_fields(parse_ipn(IPN_REFUND)))
    assert set(refund.handles) <= set(sold.handles.payment)


# --- PayPal REST webhooks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [("PAYMENT.CAPTURE.REFUNDED", "refund"), ("PAYMENT.CAPTURE.REVERSED", "chargeback")],
)
def test_a_capture_refund_or_reversal_refunds_the_capture(event_type: str, reason: str) -> None:
    event = rest_event(CAPTURE_REFUND_RAW, event_type)
    refund = refund_of(map_webhook_event(event, recurring=True))
    assert (refund.reason, refund.external_id, refund.amount) == (reason, REFUNDED_CAPTURE, 99)


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [("PAYMENT.SALE.REFUNDED", "refund"), ("PAYMENT.SALE.REVERSED", "chargeback")],
)
def test_a_sale_refund_or_reversal_refunds_the_sale_id(event_type: str, reason: str) -> None:
    event = rest_event(SALE_REFUND_RAW, event_type)
    refund = refund_of(map_webhook_event(event, recurring=True))
    assert (refund.reason, refund.external_id, refund.amount) == (reason, REFUNDED_SALE, 1499)


@pytest.mark.parametrize(
    "href",
    [
        f"https://api.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}",
        f"https://api.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}/",
        f"https://api.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}?fields=amount",
        f"https://api-m.sandbox.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}#x",
    ],
)
def test_the_capture_is_read_from_the_up_link_path(href: str) -> None:
    event = rest_event(CAPTURE_REFUND_RAW, links=up_link(href))
    assert refund_of(map_webhook_event(event, recurring=True)).external_id == REFUNDED_CAPTURE


@pytest.mark.parametrize(
    "links",
    [
        up_link("https://api.paypal.com/v2/checkout/orders/4K5112848U951142F"),
        up_link("https://api.paypal.com/v2/payments/authorizations/7W5147081L658180V"),
        up_link(f"https://api.paypal.com/v2/payments/captures/{REFUNDED_CAPTURE}/refund"),
        up_link(f"https://api.paypal.com/v1/payments/capture/{REFUNDED_CAPTURE}"),
        up_link("https://api.paypal.com/v2/payments/captures/"),
        [{"href": CAPTURE_URL, "rel": "self"}],
        [{"href": CAPTURE_URL, "rel": "UP"}],
        [],
        None,
        "up",
    ],
)
def test_a_capture_refund_without_an_up_link_to_a_capture_is_rejected(links: object) -> None:
    event = rest_event(CAPTURE_REFUND_RAW)
    event["resource"]["links"] = links
    event["resource"].pop("capture_id", None)
    assert outcome(map_webhook_event(event, recurring=True)) == rejected("missing_sale")


@pytest.mark.parametrize("sale_id", [None, "", 42, "a/b", "x" * 129])
def test_a_sale_refund_without_a_sale_id_is_rejected(sale_id: object) -> None:
    event = rest_event(SALE_REFUND_RAW)
    event["resource"]["sale_id"] = sale_id
    assert outcome(map_webhook_event(event, recurring=True)) == rejected("missing_sale")


def test_a_sale_reversal_shaped_like_paypals_sample_has_no_sale_id_and_is_rejected() -> None:
    # PayPal's documented PAYMENT.SALE.REVERSED sample names no `sale_id` (only a refund link).
    event = rest_event(SALE_REFUND_RAW, "PAYMENT.SALE.REVERSED", sale_id=None)
    assert outcome(map_webhook_event(event, recurring=True)) == rejected("missing_sale")


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("-0.99", "USD", (99, "USD")),
        ("0.99", "usd", (99, "USD")),
        ("-1000", "JPY", (1000, "JPY")),
        ("-1.234", "BHD", (1234, "BHD")),
        ("-0.999", "USD", rejected("inexact_amount")),
        ("-1000.5", "JPY", rejected("inexact_amount")),
        ("-0.00", "USD", rejected("bad_amount")),
        ("--0.99", "USD", rejected("bad_amount")),
        ("1e2", "USD", rejected("bad_amount")),
        (0.99, "USD", rejected("bad_amount")),
        ("0.99", None, rejected("bad_currency")),  # as a sale without one
        ("0.99", "US", rejected("bad_currency")),
    ],
)
def test_a_capture_refund_amount_is_exact_with_or_without_a_minus(
    value: object, currency: object, expected: object
) -> None:
    event = rest_event(CAPTURE_REFUND_RAW, amount={"value": value, "currency_code": currency})
    result = map_webhook_event(event, recurring=True)
    if isinstance(result, Refund):
        assert (result.amount, result.currency) == expected
    else:
        assert outcome(result) == expected


@pytest.mark.parametrize(
    ("total", "expected"),
    [("-0.01", (1, "USD")), ("14.99", (1499, "USD")), ("-14.999", rejected("inexact_amount"))],
)
def test_a_sale_refund_amount_is_the_total_with_or_without_a_minus(
    total: str, expected: object
) -> None:
    event = rest_event(SALE_REFUND_RAW, amount={"total": total, "currency": "USD"})
    result = map_webhook_event(event, recurring=True)
    if isinstance(result, Refund):
        assert (result.amount, result.currency) == expected
    else:
        assert outcome(result) == expected


def test_a_refund_amount_is_read_in_either_api_shape() -> None:
    # v1 writes `total` and `currency`, v2 `value` and `currency_code`: a refund may be either.
    event = rest_event(SALE_REFUND_RAW, amount={"value": "14.99", "currency_code": "USD"})
    assert refund_of(map_webhook_event(event, recurring=True)).amount == 1499


@pytest.mark.parametrize("raw", [CAPTURE_REFUND_RAW, SALE_REFUND_RAW])
def test_a_refund_without_its_own_id_is_rejected(raw: bytes) -> None:
    event = rest_event(raw, id=None)
    assert outcome(map_webhook_event(event, recurring=True)) == rejected("missing_resource_id")


@pytest.mark.parametrize("raw", [CAPTURE_REFUND_RAW, SALE_REFUND_RAW])
def test_a_rest_refund_maps_whether_recurring_conversions_are_on_or_off(raw: bytes) -> None:
    event = rest_event(raw)
    assert map_webhook_event(event, recurring=False) == map_webhook_event(event, recurring=True)


def test_a_capture_refund_shares_a_handle_with_the_capture_it_refunds() -> None:
    sold = map_webhook_event(rest_event(CAPTURE_COMPLETED_RAW), recurring=True)
    assert isinstance(sold, Conversion)
    href = f"https://api.paypal.com/v2/payments/captures/{sold.external_id}"
    refund = refund_of(
        map_webhook_event(rest_event(CAPTURE_REFUND_RAW, links=up_link(href)), recurring=True)
    )
    assert refund.external_id == sold.external_id
    assert set(refund.handles) <= set(sold.handles.payment)


# --- one PayPal refund, two channels -------------------------------------------------------


def test_the_same_refund_through_ipn_and_rest_is_one_item() -> None:
    # PayPal names a refund by one transaction id: IPN's `txn_id`, REST's `resource.id`.
    through_ipn = refund_of(map_fields(parse_ipn(IPN_REFUND)))
    href = f"https://api.paypal.com/v2/payments/captures/{IPN_SALE_TXN}"
    event = rest_event(
        CAPTURE_REFUND_RAW,
        id=IPN_REFUND_TXN,
        links=up_link(href),
        amount={"value": "5.95", "currency_code": "USD"},
    )
    through_rest = refund_of(map_webhook_event(event, recurring=True))
    assert through_rest.key == through_ipn.key == f"paypal_{IPN_REFUND_TXN}"
    assert through_rest.item_id == through_ipn.item_id == f"refund_paypal_{IPN_REFUND_TXN}"
    assert through_rest == through_ipn


def test_a_paypal_refund_and_a_stripe_event_of_the_same_id_are_different_items() -> None:
    stripe = refund_of(map_stripe_event(stripe_event(STRIPE_REFUND, id="X1"), recurring=True))
    paypal = refund_of(map_fields(ipn(IPN_REFUND, txn_id="X1")))
    assert stripe.item_id != paypal.item_id


# --- the Refund value ----------------------------------------------------------------------


def test_fields_of_a_paypal_refund() -> None:
    refund = refund_of(map_fields(parse_ipn(IPN_REFUND)))
    assert refund.fields() == {
        "kind": "refund",
        "external_id": IPN_SALE_TXN,
        "reason": "refund",
        "handles": f"paypal:txn:{IPN_SALE_TXN}",
        "requested": "595",
        "currency": "USD",
        "charge": "",
        "charge_refunded": "",
        "charge_amount": "",
        "dispute_amount": "",
        "payment_intent": "",
        "invoice": "",
    }


def test_fields_of_a_stripe_charge_refund_leave_unknown_values_empty() -> None:
    event = charge_refunded(amount_refunded=500)
    fields = refund_of(map_stripe_event(event, recurring=True)).fields()
    assert fields == {
        "kind": "refund",
        "external_id": "",
        "reason": "refund",
        "handles": f"stripe:ch:{CHARGE_ID}\x1fstripe:pi:{INTENT_ID}",
        "requested": "",
        "currency": "USD",
        "charge": CHARGE_ID,
        "charge_refunded": "500",
        "charge_amount": "2000",
        "dispute_amount": "",
        "payment_intent": INTENT_ID,
        "invoice": "",
    }
    assert all(isinstance(value, str) for value in fields.values())


def test_a_refund_with_nothing_known_but_its_key_has_only_empty_fields() -> None:
    fields = Refund(key="k", reason="chargeback").fields()
    assert fields.pop("kind") == "refund" and fields.pop("reason") == "chargeback"
    assert set(fields.values()) == {""}


def test_the_payload_leaves_out_the_amount_of_a_whole_refund() -> None:
    assert payload("8X786252873429051", None, "chargeback") == {
        "externalId": "8X786252873429051",
        "reason": "chargeback",
    }


def test_the_payload_of_a_partial_refund_names_its_amount() -> None:
    body = payload("cs_test_1", 500, "refund")
    assert body == {"externalId": "cs_test_1", "amount": 500, "reason": "refund"}
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("amount", [0, -1, True, "1000", 10**12 + 1, 10**400])
def test_a_lost_dispute_without_a_usable_amount_is_a_malformed_object(amount: object) -> None:
    result = map_stripe_event(dispute_closed(amount=amount), recurring=True)
    assert outcome(result) == ignored("malformed_object")
