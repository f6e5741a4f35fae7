"""PayPal REST webhook events → RefCampaign conversions, per the table of docs/mapping.md.

Real events from `tests/samples/paypal_webhooks/` (SOURCES.md there); the rows no public sample
shows (refunds, pending captures, subscription sales...) are the real capture and sale with the
field the row reads changed.
"""

from __future__ import annotations

import copy
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.conversion import Conversion, Ignored, Rejected, contains_email
from bridge.providers.paypal.webhooks import (
    TRANSMISSION_HEADERS,
    capture_order_id,
    map_webhook_event,
    parse_event,
    verification_body,
)
from tests.fixtures import paypal_webhook_fixture, paypal_webhook_fixture_names
from tests.test_mapping_paypal import ignored, outcome, rejected

CAPTURE_RAW = paypal_webhook_fixture("rootcompany__payment_capture_completed.json")
ORDER_APPROVED_RAW = paypal_webhook_fixture("rootcompany__checkout_order_approved.json")
SALE_CUSTOM_RAW = paypal_webhook_fixture("paypal_node_sdk__payment_sale_completed_custom.json")

CAPTURE_EVENT_ID = "WH-3UT90572MR669760L-7LL94124G5389840D"
CAPTURE_SALE: dict[str, Any] = {
    "externalId": "5VK462069F664902F",
    "conversionType": "SALE",
    "amount": 1000,
    "currency": "USD",
    # custom_id "{my-local-db-purchase-id}" holds no "=": a bare tracking session id.
    "sessionId": "{my-local-db-purchase-id}",
    "convertedAt": "2021-10-17T05:04:29Z",
    "metadata": {
        "source": "paypal",
        "eventId": CAPTURE_EVENT_ID,
        "eventType": "PAYMENT.CAPTURE.COMPLETED",
    },
}
SALE_WITH_CUSTOM: dict[str, Any] = {
    "externalId": "8RS6210148826604N",
    "conversionType": "SALE",
    "amount": 601,
    "currency": "USD",
    "sessionId": "Hello World!",
    "convertedAt": "2016-10-05T14:57:18Z",
    "metadata": {
        "source": "paypal",
        "eventId": "WH-82L71649W50323023-5WC64761VS637831A",
        "eventType": "PAYMENT.SALE.COMPLETED",
    },
}
SALE_EMPTY_CUSTOM: dict[str, Any] = {
    "externalId": "80F85758S3080410K",
    "conversionType": "SALE",
    "amount": 2100,
    "currency": "USD",
    "convertedAt": "2016-09-21T21:59:02Z",
    "metadata": {
        "source": "paypal",
        "eventId": "WH-9UG43882HX7271132-6E0871324L7949614",
        "eventType": "PAYMENT.SALE.COMPLETED",
    },
}
SALE_2015: dict[str, Any] = {
    "externalId": "4EU7004268015634R",
    "conversionType": "SALE",
    "amount": 2000,
    "currency": "USD",
    "convertedAt": "2015-05-18T15:44:02Z",
    "metadata": {
        "source": "paypal",
        "eventId": "WH-0G2756385H040842W-5Y612302CV158622M",
        "eventType": "PAYMENT.SALE.COMPLETED",
    },
}


def event_of(raw: bytes) -> dict[str, Any]:
    event = parse_event(raw)
    assert event is not None
    return event


def edited(raw: bytes, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The event in `raw` after `change(event)` edited it in place."""
    event = copy.deepcopy(event_of(raw))
    change(event)
    return event


def with_resource(raw: bytes, **fields: Any) -> dict[str, Any]:
    """The event in `raw` with `resource` fields set (or removed, given None)."""

    def change(event: dict[str, Any]) -> None:
        for name, value in fields.items():
            if value is None:
                event["resource"].pop(name, None)
            else:
                event["resource"][name] = value

    return edited(raw, change)


def with_event_type(raw: bytes, event_type: str) -> dict[str, Any]:
    return edited(raw, lambda event: event.update(event_type=event_type))


# Every sample, mapped with RECURRING_CONVERSIONS on and off.
SAMPLES: dict[str, tuple[object, object]] = {
    "rootcompany__payment_capture_completed.json": (CAPTURE_SALE, CAPTURE_SALE),
    "rootcompany__checkout_order_approved.json": (
        ignored("unhandled_event_type"),
        ignored("unhandled_event_type"),
    ),
    "paypal_node_sdk__payment_sale_completed_custom.json": (
        SALE_WITH_CUSTOM,
        ignored("recurring_disabled"),
    ),
    "paypal_net_sdk__payment_sale_completed.json": (
        SALE_EMPTY_CUSTOM,
        ignored("recurring_disabled"),
    ),
    "paypal_node_sdk__payment_sale_completed_2015.json": (
        SALE_2015,
        ignored("recurring_disabled"),
    ),
    "paypal_node_sdk__payment_authorization_created.json": (
        ignored("unhandled_event_type"),
        ignored("unhandled_event_type"),
    ),
    "paypal_php_sdk__payments_payment_created.json": (
        ignored("unhandled_event_type"),
        ignored("unhandled_event_type"),
    ),
    "paypal_java_sdk__billing_plan_created.json": (
        ignored("unhandled_event_type"),
        ignored("unhandled_event_type"),
    ),
    # Refunds, whatever RECURRING_CONVERSIONS says (tests/test_mapping_refunds.py has the rest).
    "solidus__payment_capture_refunded_v2.json": (("Refund", "refund"), ("Refund", "refund")),
    "solidus__payment_capture_refunded_v1.json": (("Refund", "refund"), ("Refund", "refund")),
    "jsonx__payment_sale_refunded.json": (("Refund", "refund"), ("Refund", "refund")),
}


def test_every_sample_has_an_expected_outcome() -> None:
    assert sorted(SAMPLES) == paypal_webhook_fixture_names()


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_every_sample_maps_as_expected(name: str) -> None:
    event = event_of(paypal_webhook_fixture(name))
    recurring_on, recurring_off = SAMPLES[name]
    assert outcome(map_webhook_event(event, recurring=True)) == recurring_on
    assert outcome(map_webhook_event(event, recurring=False)) == recurring_off


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_no_sample_leaks_an_email(name: str) -> None:
    # The order approval and the v1 payment carry payer and payee addresses.
    event = event_of(paypal_webhook_fixture(name))
    for recurring in (True, False):
        result = map_webhook_event(event, recurring=recurring)
        assert not contains_email(json.dumps(outcome(result)))
        assert not contains_email(getattr(result, "detail", ""))


def test_the_capture_links_to_its_order() -> None:
    assert capture_order_id(event_of(CAPTURE_RAW)) == "4K5112848U951142F"
    # The order approval names the same order, as its own id.
    assert event_of(ORDER_APPROVED_RAW)["resource"]["id"] == "4K5112848U951142F"


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_only_captures_name_an_order(name: str) -> None:
    expected = "4K5112848U951142F" if "payment_capture_completed" in name else None
    assert capture_order_id(event_of(paypal_webhook_fixture(name))) == expected


@pytest.mark.parametrize(
    "order_id", [None, 42, "", "../../v1/oauth2/token", "4K5 112", "a@b.example", "x" * 129]
)
def test_capture_order_id_is_none_unless_an_id(order_id: object) -> None:
    event = edited(
        CAPTURE_RAW,
        lambda event: event["resource"]["supplementary_data"]["related_ids"].update(
            order_id=order_id
        ),
    )
    assert capture_order_id(event) is None
    assert capture_order_id({"resource": {"supplementary_data": []}}) is None
    assert capture_order_id({}) is None


# --- the table, row by row ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("PAYMENT.CAPTURE.COMPLETED", CAPTURE_SALE),
        ("PAYMENT.CAPTURE.PENDING", ignored("unhandled_event_type")),
        # A capture is no refund: it has no `up` link to a capture (test_mapping_refunds.py).
        ("PAYMENT.CAPTURE.REFUNDED", rejected("missing_sale")),
        ("PAYMENT.CAPTURE.REVERSED", rejected("missing_sale")),
        ("PAYMENT.CAPTURE.DENIED", ignored("unhandled_event_type")),
        ("PAYMENT.CAPTURE.DECLINED", ignored("unhandled_event_type")),
        ("CHECKOUT.ORDER.APPROVED", ignored("unhandled_event_type")),
        ("CHECKOUT.ORDER.COMPLETED", ignored("unhandled_event_type")),
        ("BILLING.SUBSCRIPTION.ACTIVATED", ignored("unhandled_event_type")),
        ("BILLING.SUBSCRIPTION.CREATED", ignored("unhandled_event_type")),
        ("payment.capture.completed", ignored("unhandled_event_type")),
        ("", rejected("missing_event_type")),
    ],
)
def test_only_a_completed_capture_event_counts(event_type: str, expected: object) -> None:
    # A refund or reversal resource has status COMPLETED too: the event type decides.
    event = with_event_type(CAPTURE_RAW, event_type)
    assert outcome(map_webhook_event(event, recurring=True)) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("COMPLETED", CAPTURE_SALE),
        ("PENDING", ignored("capture_status_pending")),
        ("DECLINED", ignored("capture_status_declined")),
        ("REFUNDED", ignored("capture_status_refunded")),
        ("PARTIALLY_REFUNDED", ignored("capture_status_partially_refunded")),
        ("FAILED", ignored("capture_status_failed")),
        ("completed", ignored("capture_status_completed")),
        ("Something new", ignored("capture_status_other")),
        (None, ignored("capture_status_missing")),
        (7, ignored("capture_status_missing")),
    ],
)
def test_a_capture_counts_only_when_completed(status: object, expected: object) -> None:
    event = edited(CAPTURE_RAW, lambda event: event["resource"].update(status=status))
    assert outcome(map_webhook_event(event, recurring=False)) == expected


@pytest.mark.parametrize(
    ("state", "recurring", "expected"),
    [
        ("completed", True, SALE_WITH_CUSTOM),
        ("completed", False, ignored("recurring_disabled")),
        ("pending", True, ignored("sale_state_pending")),
        ("refunded", True, ignored("sale_state_refunded")),
        ("partially_refunded", True, ignored("sale_state_partially_refunded")),
        ("denied", True, ignored("sale_state_denied")),
        ("COMPLETED", True, ignored("sale_state_completed")),
        ("reversed-ish", True, ignored("sale_state_other")),
        (None, True, ignored("sale_state_missing")),
    ],
)
def test_a_sale_counts_when_completed_and_recurring_is_on(
    state: object, recurring: bool, expected: object
) -> None:
    event = edited(SALE_CUSTOM_RAW, lambda event: event["resource"].update(state=state))
    assert outcome(map_webhook_event(event, recurring=recurring)) == expected


def test_a_subscription_sale_is_read_like_any_sale() -> None:
    # Subscription payments carry billing_agreement_id; nothing else in the mapping changes.
    event = with_resource(SALE_CUSTOM_RAW, billing_agreement_id="I-CP18AJLYDWR2")
    assert outcome(map_webhook_event(event, recurring=True)) == SALE_WITH_CUSTOM
    assert outcome(map_webhook_event(event, recurring=False)) == ignored("recurring_disabled")


def test_the_event_type_detail_is_bounded_and_printable() -> None:
    event = with_event_type(CAPTURE_RAW, "X" * 1000 + "\n\x00")
    result = map_webhook_event(event, recurring=True)
    assert isinstance(result, Ignored) and result.reason == "unhandled_event_type"
    assert len(result.detail) <= 60 and result.detail.isprintable()


# --- money --------------------------------------------------------------------------------------


def capture_amount(value: object, currency: object) -> dict[str, Any]:
    return edited(
        CAPTURE_RAW,
        lambda event: event["resource"].update(amount={"value": value, "currency_code": currency}),
    )


def sale_amount(total: object, currency: object) -> dict[str, Any]:
    return edited(
        SALE_CUSTOM_RAW,
        lambda event: event["resource"].update(amount={"total": total, "currency": currency}),
    )


@pytest.mark.parametrize("amount_of", [capture_amount, sale_amount])
@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("10.00", "USD", (1000, "USD")),
        ("10", "usd", (1000, "USD")),
        ("0.01", "EUR", (1, "EUR")),
        ("1000", "JPY", (1000, "JPY")),
        ("1000.00", "JPY", (1000, "JPY")),
        ("1000.5", "JPY", rejected("inexact_amount")),
        ("1.234", "BHD", (1234, "BHD")),
        ("1.2345", "BHD", rejected("inexact_amount")),
        ("10.001", "USD", rejected("inexact_amount")),
        ("-10.00", "USD", rejected("bad_amount")),
        ("0.00", "USD", rejected("bad_amount")),
        ("1e3", "USD", rejected("bad_amount")),
        ("NaN", "USD", rejected("bad_amount")),
        ("1,000.00", "USD", rejected("bad_amount")),
        ("", "USD", rejected("bad_amount")),
        (10, "USD", rejected("bad_amount")),
        (None, "USD", rejected("bad_amount")),
        ("1" * 100, "USD", rejected("bad_amount")),
        ("10.00", "US", rejected("bad_currency")),
        ("10.00", "€€€", rejected("bad_currency")),
        ("10.00", None, rejected("bad_currency")),
    ],
)
def test_amounts_are_exact_minor_units(
    amount_of: Callable[[object, object], dict[str, Any]],
    value: object,
    currency: object,
    expected: object,
) -> None:
    result = map_webhook_event(amount_of(value, currency), recurring=True)
    if isinstance(result, Conversion):
        assert (result.amount, result.currency) == expected
    else:
        assert outcome(result) == expected


@pytest.mark.parametrize("raw", [CAPTURE_RAW, SALE_CUSTOM_RAW])
def test_a_missing_amount_is_rejected(raw: bytes) -> None:
    for amount in (None, "10.00", ["10.00"]):
        event = with_resource(raw, amount=amount)
        assert outcome(map_webhook_event(event, recurring=True)) == rejected("bad_amount")


def test_the_capture_amount_is_amount_not_the_breakdown() -> None:
    # seller_receivable_breakdown.net_amount is 9.16: the conversion is the buyer's 10.00.
    result = map_webhook_event(event_of(CAPTURE_RAW), recurring=False)
    assert isinstance(result, Conversion) and result.amount == 1000


# --- attribution and the other fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("custom", "session_id", "click_id"),
    [
        ("sess_123", "sess_123", None),
        ("  sess_123  ", "sess_123", None),
        ("rcsid=sess_1&cid=clk_2", "sess_1", "clk_2"),
        ("cid=clk_2", None, "clk_2"),
        ("rcsid=a%2Bb&cid=c+d", "a+b", "c+d"),
        ("sessionId=s9&clickId=c9", "s9", "c9"),
        ("website_id=13&user_id=21", None, None),
        ("", None, None),
        (None, None, None),
        (12345, None, None),
        ("jane@example.com", None, None),
        ("Jane <jane@example.com>", None, None),
        ("rcsid=jane%40example.com&cid=clk_2", None, "clk_2"),
        ("\ud800lone", "?lone", None),
    ],
)
def test_custom_is_read_like_the_ipn_custom(
    custom: object, session_id: str | None, click_id: str | None
) -> None:
    capture = edited(CAPTURE_RAW, lambda event: event["resource"].update(custom_id=custom))
    sale = edited(SALE_CUSTOM_RAW, lambda event: event["resource"].update(custom=custom))
    for event in (capture, sale):
        result = map_webhook_event(event, recurring=True)
        assert isinstance(result, Conversion)
        assert (result.session_id, result.click_id) == (session_id, click_id)
        json.dumps(result.to_payload()).encode("utf-8")  # nothing unencodable reaches the body


def test_a_capture_reads_custom_id_and_a_sale_reads_custom() -> None:
    capture = with_resource(CAPTURE_RAW, custom_id=None, custom="rcsid=wrong")
    sale = with_resource(SALE_CUSTOM_RAW, custom=None, custom_id="rcsid=wrong")
    for event in (capture, sale):
        result = map_webhook_event(event, recurring=True)
        assert isinstance(result, Conversion) and result.session_id is None


def test_an_unattributed_capture_is_still_a_conversion() -> None:
    # The worker may then look the order up for the buyer's e-mail; delivery counts it otherwise.
    result = map_webhook_event(with_resource(CAPTURE_RAW, custom_id=None), recurring=True)
    assert isinstance(result, Conversion) and not result.attributed


@pytest.mark.parametrize(
    ("payer", "customer_id"),
    [
        ({"payer_id": "YTENGYR8PAF9A"}, "YTENGYR8PAF9A"),
        ({"payer_info": {"payer_id": "WZH5NSHUBE63W"}}, "WZH5NSHUBE63W"),
        ({"payer_id": 7}, None),
        ({"payer_id": "bad id"}, None),
        ("YTENGYR8PAF9A", None),
        (None, None),
    ],
)
def test_the_payer_id_is_the_customer_id_where_there_is_one(
    payer: object, customer_id: str | None
) -> None:
    # No sample capture or sale carries a payer (orders and v1 payments do): see SOURCES.md.
    result = map_webhook_event(with_resource(CAPTURE_RAW, payer=payer), recurring=True)
    assert isinstance(result, Conversion) and result.customer_id == customer_id


def test_a_payer_email_in_the_resource_is_never_sent() -> None:
    payer = {"email_address": "buyer@example.com", "payer_id": "YTENGYR8PAF9A"}
    event = with_resource(CAPTURE_RAW, payer=payer)
    payload = outcome(map_webhook_event(event, recurring=True))
    assert "buyer@example.com" not in json.dumps(payload)


@pytest.mark.parametrize(
    ("create_time", "converted_at"),
    [
        ("2021-10-17T05:04:29Z", "2021-10-17T05:04:29Z"),
        ("2018-08-15T19:14:04.543Z", "2018-08-15T19:14:04Z"),
        ("2018-08-15T12:13:29-07:00", "2018-08-15T19:13:29Z"),
        ("2021-10-17T05:04:29", None),  # no offset: PayPal always states one
        ("2021-10-17", None),
        ("17 Oct 2021", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("2021-10-17T05:04:29Z" + " " * 100, None),
        (1634447069, None),
        (None, None),
    ],
)
def test_converted_at_is_the_resource_create_time_in_utc(
    create_time: object, converted_at: str | None
) -> None:
    result = map_webhook_event(with_resource(CAPTURE_RAW, create_time=create_time), recurring=True)
    assert isinstance(result, Conversion) and result.converted_at == converted_at


@pytest.mark.parametrize(
    ("resource_id", "expected"),
    [
        ("5VK462069F664902F", "5VK462069F664902F"),
        (None, rejected("missing_resource_id")),
        ("", rejected("missing_resource_id")),
        (12345, rejected("missing_resource_id")),
        ("a b", rejected("missing_resource_id")),
        ("x" * 129, rejected("missing_resource_id")),
    ],
)
def test_the_external_id_is_the_resource_id(resource_id: object, expected: object) -> None:
    event = edited(CAPTURE_RAW, lambda event: event["resource"].update(id=resource_id))
    result = map_webhook_event(event, recurring=True)
    if isinstance(result, Conversion):
        assert result.external_id == expected
    else:
        assert outcome(result) == expected


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"event_type": "PAYMENT.CAPTURE.COMPLETED"},
        {"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": "x"},
        {"id": "WH 1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}},
        {"id": None, "event_type": "PAYMENT.SALE.COMPLETED", "resource": {}},
        {"id": "WH-1", "event_type": None, "resource": {}},
    ],
)
def test_a_malformed_event_is_rejected(event: dict[str, Any]) -> None:
    assert isinstance(map_webhook_event(event, recurring=True), Rejected)


def test_metadata_names_the_event_only() -> None:
    event = with_resource(CAPTURE_RAW, custom_id="rcsid=s1&cid=c1")
    event["resource"]["invoice_id"] = "INV-1"
    result = map_webhook_event(event, recurring=True)
    assert isinstance(result, Conversion)
    assert result.metadata == {
        "source": "paypal",
        "eventId": CAPTURE_EVENT_ID,
        "eventType": "PAYMENT.CAPTURE.COMPLETED",
    }
    assert result.custom_params == {}


# --- parse_event on what anyone can send ----------------------------------------------------------


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_every_sample_parses(name: str) -> None:
    raw = paypal_webhook_fixture(name)
    assert parse_event(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"null",
        b"[]",
        b'"WH-1"',
        b"\xff\xfe{}",
        b"id=WH-1&event_type=X",
        b'{"id":"WH-1","event_type":"X"}',
        b'{"id":"WH-1","resource":{}}',
        b'{"event_type":"X","resource":{}}',
        b'{"id":"WH-1","event_type":"X","resource":[]}',
        b'{"id":"WH-1","event_type":7,"resource":{}}',
        b'{"id":7,"event_type":"X","resource":{}}',
        b'{"id":"","event_type":"X","resource":{}}',
        b'{"id":"WH 1","event_type":"X","resource":{}}',
        b'{"id":"WH-1\\n","event_type":"X","resource":{}}',
        b'{"id":"' + b"W" * 129 + b'","event_type":"X","resource":{}}',
        b'{"id":"WH-1","event_type":"X","resource":{}',
        b'{"id":"WH-1","event_type":"X","resource":{"a":NaN}}',
        b'{"id":"WH-1","event_type":"X","resource":{"a":-Infinity}}',
        b'{"id":"WH-1","event_type":"X","resource":{"a":1e999}}',
        b'{"id":"WH-1","event_type":"X","resource":{"a":' + b"9" * 5000 + b"}}",
        b'{"id":"WH-1","event_type":"X","resource":{"a":0.' + b"1" * 5000 + b"}}",
        b'{"id":"WH-1","event_type":"X","resource":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"id":"WH-1","event_type":"X","resource":{"s":"\xc3\x28"}}',
        b"{" * 262_144,
    ],
)
def test_parse_event_refuses_what_is_no_event(raw: bytes) -> None:
    assert parse_event(raw) is None


def test_parse_event_tolerates_what_json_allows() -> None:
    raw = b'\n {"resource":{"a":[1,2.5,true,null]},"event_type":"X","id":"WH-1","id":"WH-2"} \n'
    assert parse_event(raw) == {
        "resource": {"a": [1, 2.5, True, None]},
        "event_type": "X",
        "id": "WH-2",
    }


def _filled(kind: bytes, size: int) -> bytes:
    """An event of about `size` bytes whose resource repeats `kind`."""
    head = b'{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED","resource":{"a":['
    count = (size - len(head) - 3) // (len(kind) + 1)
    return head + b",".join([kind] * count) + b"]}}"


def _best_time(raw: bytes) -> float:
    # A full garbage collection walks every object of the process (all of pytest's): a cost of
    # the heap, not of the body. Frozen, those objects are left out and only the parse is timed.
    gc.collect()
    gc.freeze()
    try:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            parse_event(raw)
            best = min(best, time.perf_counter() - started)
        return best
    finally:
        gc.unfreeze()


@pytest.mark.alone  # timed: run with nothing else running (the `alone` marker)
@pytest.mark.parametrize(
    "kind", [b"1", b'"x"', b'"\\u00e9\\ud83d\\ude00"', b"[[[]]]", b'{"k":1}', b"1.5", b"99999"]
)
def test_parse_event_takes_time_linear_in_the_body(kind: bytes) -> None:
    small, large = _filled(kind, 64 * 1024), _filled(kind, 256 * 1024)
    assert len(large) <= 256 * 1024
    # 4 times the bytes: about 4 times the time (measured 3-6 ×); a quadratic parse takes 16 ×.
    # Up to three rounds: a loaded machine can only make a round look worse than it is.
    for _ in range(3):
        t_small, t_large = _best_time(small), _best_time(large)
        if t_large < 10 * t_small + 0.005:
            break
    assert t_large < 10 * t_small + 0.005, f"{t_large / t_small:.1f}x for 4 times the bytes"


# --- verification_body --------------------------------------------------------------------------

HEADERS = {
    "PAYPAL-TRANSMISSION-ID": "89556ce0-4d55-11ee-9f56-dd5f48f22b28",
    "PAYPAL-TRANSMISSION-TIME": "2023-09-07T08:07:06Z",
    "PAYPAL-TRANSMISSION-SIG": "KZnM9kr70vxRNEBlNE0q4DRbNYasQOFEqQYx+/=",
    "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-360caa42",
    "PAYPAL-AUTH-ALGO": "SHA256withRSA",
}


def test_the_transmission_headers_are_paypals() -> None:
    assert TRANSMISSION_HEADERS == tuple(HEADERS)


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_verification_body_splices_the_event_as_received(name: str) -> None:
    raw = paypal_webhook_fixture(name)
    body = verification_body(raw, HEADERS, "3TR748995U920805P")
    assert body.endswith(b',"webhook_event":' + raw + b"}")
    request = json.loads(body)
    assert request == {
        "auth_algo": "SHA256withRSA",
        "cert_url": "https://api.paypal.com/v1/notifications/certs/CERT-360caa42",
        "transmission_id": "89556ce0-4d55-11ee-9f56-dd5f48f22b28",
        "transmission_sig": "KZnM9kr70vxRNEBlNE0q4DRbNYasQOFEqQYx+/=",
        "transmission_time": "2023-09-07T08:07:06Z",
        "webhook_id": "3TR748995U920805P",
        "webhook_event": json.loads(raw),
    }


def test_verification_body_keeps_key_order_spacing_and_escapes() -> None:
    # Exactly what a re-serialization would change: order, spaces, escapes, number spelling.
    raw = (
        b'{ "resource" : {"amount":{"value":"1.00"},"n":1.50,"e":"\\u00e9/\\/"},\n'
        b'"id":"WH-1","event_type":"X"}'
    )
    body = verification_body(raw, HEADERS, "WID")
    assert body.count(raw) == 1
    assert json.loads(body)["webhook_event"] == json.loads(raw)


@pytest.mark.parametrize(
    "headers",
    [
        {name.lower(): value for name, value in HEADERS.items()},
        {name.title(): value for name, value in HEADERS.items()},
        {"Paypal-Transmission-Id": HEADERS["PAYPAL-TRANSMISSION-ID"], **HEADERS},
    ],
)
def test_verification_body_reads_headers_whatever_their_case(headers: dict[str, str]) -> None:
    request = json.loads(verification_body(CAPTURE_RAW, headers, "WID"))
    assert request["transmission_id"] == HEADERS["PAYPAL-TRANSMISSION-ID"]
    assert request["auth_algo"] == "SHA256withRSA"
    assert request["transmission_sig"] == HEADERS["PAYPAL-TRANSMISSION-SIG"]


def test_verification_body_with_missing_or_odd_headers_is_still_json() -> None:
    headers = {"PAYPAL-TRANSMISSION-ID": '"},"webhook_id":"forged', "PAYPAL-AUTH-ALGO": "\ud800"}
    request = json.loads(verification_body(CAPTURE_RAW, headers, "WID"))
    assert request["transmission_id"] == '"},"webhook_id":"forged'
    assert request["webhook_id"] == "WID"
    assert request["cert_url"] == "" and request["transmission_time"] == ""


# --- nothing raises -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["COMPLETED", "completed", "10.00", "USD", "JPY", "rcsid=a&cid=b"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["id", "status", "state", "amount", "custom", "custom_id", "create_time", "payer"]
)


@given(st.binary(max_size=2048))
def test_parse_event_never_raises(raw: bytes) -> None:
    event = parse_event(raw)
    assert event is None or isinstance(event, dict)
    verification_body(raw, {}, "WID")


@given(st.dictionaries(st.sampled_from(["id", "event_type", "resource", "x"]), JSON_VALUES))
def test_map_webhook_event_never_raises_on_any_object(event: dict[str, Any]) -> None:
    for recurring in (True, False):
        assert isinstance(
            map_webhook_event(event, recurring=recurring), Conversion | Ignored | Rejected
        )
    capture_order_id(event)


@settings(max_examples=300)
@given(
    st.sampled_from(paypal_webhook_fixture_names()),
    st.sampled_from(["PAYMENT.CAPTURE.COMPLETED", "PAYMENT.SALE.COMPLETED", None]),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=3),
)
def test_map_webhook_event_never_raises_on_edited_samples(
    name: str, event_type: str | None, fields: dict[str, Any]
) -> None:
    event = event_of(paypal_webhook_fixture(name))
    if event_type is not None:
        event["event_type"] = event_type
    event["resource"].update(fields)
    for recurring in (True, False):
        result = map_webhook_event(event, recurring=recurring)
        if isinstance(result, Conversion):
            json.dumps(result.to_payload(), allow_nan=False).encode("utf-8")
            assert result.amount > 0
