"""PayPal REST webhook events → RefCampaign conversions, per the table of docs/mapping.md."""

from __future__ import annotations

import json
from typing import Any

from bridge.conversion import Conversion, Ignored, MappingResult, Rejected
from bridge.providers.paypal.webhooks import (
    TRANSMISSION_HEADERS,
    capture_order_id,
    map_webhook_event,
    parse_event,
    verification_body,
)

CAPTURE = (
    b'{"id":"WH-58D329510W468432D-8HN650336L201105X","create_time":"2019-02-14T21:50:07.940Z",'
    b'"resource_type":"capture","event_type":"PAYMENT.CAPTURE.COMPLETED",'
    b'"resource":{"amount":{"currency_code":"USD","value":"2.51"},"status":"COMPLETED",'
    b'"id":"42311647XV020574X","custom_id":"rcsid=s1&cid=c1",'
    b'"supplementary_data":{"related_ids":{"order_id":"27E07489BK6345215"}},'
    b'"create_time":"2019-02-14T21:49:58Z"}}'
)


def outcome(result: MappingResult) -> dict[str, Any] | tuple[str, str]:
    """A Conversion as its exact postback body; Ignored / Rejected as (kind, reason)."""
    if isinstance(result, Conversion):
        return result.to_payload()
    return (type(result).__name__, result.reason)


def test_completed_capture_is_a_sale() -> None:
    event = parse_event(CAPTURE)
    assert event is not None
    assert outcome(map_webhook_event(event, recurring=False)) == {
        "externalId": "42311647XV020574X",
        "conversionType": "SALE",
        "amount": 251,
        "currency": "USD",
        "sessionId": "s1",
        "clickId": "c1",
        "convertedAt": "2019-02-14T21:49:58Z",
        "metadata": {
            "source": "paypal",
            "eventId": "WH-58D329510W468432D-8HN650336L201105X",
            "eventType": "PAYMENT.CAPTURE.COMPLETED",
        },
    }
    assert capture_order_id(event) == "27E07489BK6345215"


def test_other_event_types_are_ignored() -> None:
    event = {"id": "WH-1", "event_type": "CHECKOUT.ORDER.APPROVED", "resource": {}}
    assert map_webhook_event(event, recurring=True) == Ignored(
        "unhandled_event_type", "CHECKOUT.ORDER.APPROVED"
    )


def test_sale_needs_recurring_conversions() -> None:
    event = {
        "id": "WH-2",
        "event_type": "PAYMENT.SALE.COMPLETED",
        "resource": {
            "id": "S1",
            "state": "completed",
            "amount": {"total": "9.99", "currency": "USD"},
        },
    }
    assert outcome(map_webhook_event(event, recurring=False)) == ("Ignored", "recurring_disabled")
    result = map_webhook_event(event, recurring=True)
    assert isinstance(result, Conversion) and result.amount == 999


def test_bad_amount_is_rejected() -> None:
    event = json.loads(CAPTURE)
    event["resource"]["amount"]["value"] = "2.511"
    assert outcome(map_webhook_event(event, recurring=False)) == ("Rejected", "inexact_amount")
    assert isinstance(map_webhook_event({"x": 1}, recurring=True), Rejected)


def test_parse_event_refuses_what_is_no_event() -> None:
    for raw in (b"", b"\xff", b"[]", b'{"id":"WH-1"}', b"[" * 100_000, b'{"id":1e999999}'):
        assert parse_event(raw) is None


def test_verification_body_splices_the_exact_bytes() -> None:
    raw = b'{ "id" :"WH-1",  "event_type":"X", "resource":{}}\n'
    headers = {name.lower(): f"v-{name}" for name in TRANSMISSION_HEADERS}
    body = verification_body(raw, headers, "WHID")
    assert raw in body
    loaded = json.loads(body)
    assert loaded["webhook_event"] == json.loads(raw)
    assert loaded["webhook_id"] == "WHID"
    assert loaded["transmission_sig"] == "v-PAYPAL-TRANSMISSION-SIG"
    assert loaded["auth_algo"] == "v-PAYPAL-AUTH-ALGO"
