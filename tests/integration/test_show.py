# ruff: noqa: F811 — `stack` is the fixture imported from test_refunds
"""`refbridge show ID` tells one payment's story, by any id a person has in hand, through the
Procfile's processes (gunicorn web, Celery worker) and the stand-ins, RefCampaign answering in
its `{"success", "data", "meta"}` envelope (SPEC, CLI: `refbridge show`)."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.test_refunds import (  # noqa: F401 — the module's processes
    Stack,
    _stack,
    _stripe_api,
    charge_refunded,
    checkout,
    new_id,
    rest_capture,
    stack,
)
from tests.standins.refcampaign import Scripted
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def show(stack: Stack, asked: str) -> dict[str, Any]:
    result = stack.cli("show", asked, "--json")
    assert result.returncode == 0, result.stderr
    told: dict[str, Any] = json.loads(result.stdout)
    return told


def same_story(stack: Stack, *ids: str) -> dict[str, Any]:
    """The story told for each of `ids`: the same one, whichever id was asked."""
    stories = [show(stack, asked) for asked in ids]
    for told in stories:
        assert {**told, "id": ""} == {**stories[0], "id": ""}, told["id"]
    return stories[0]


def test_a_delivered_stripe_sale_by_each_of_its_ids(stack: Stack) -> None:
    session, intent = new_id("cs_test_show_"), new_id("pi_show_")
    stack.refcampaign.script(Scripted(503, "upstream down"))  # the first attempt fails
    sold = checkout(session, intent)
    stack.stripe_event(sold)
    stack.refcampaign.wait_for(1, timeout=60)
    stack.wait_status(session, "delivered")
    refund = charge_refunded(intent, 1000)
    stack.stripe_event(refund)
    stack.refcampaign.wait_for_refunds(1)
    stack.wait_status(f"refund_{refund['id']}", "delivered")
    charge = refund["data"]["object"]["id"]
    told = same_story(stack, session, sold["id"], intent, charge, refund["id"])
    row = stack.refcampaign.conversions[session]
    assert told["externalId"] == session
    assert told["state"] == "delivered"
    assert told["conversionId"] == row["id"] and told["conversionId"]
    assert told["commissionId"] and told["commissionAmount"] == 300
    assert told["conversion"] == {"conversionType": "SALE", "amount": 3000, "currency": "USD"}
    assert told["attribution"]["sessionId"] == "rcs_refund"
    assert told["attribution"]["from"] == "event"
    [event] = told["events"]
    assert (event["eventId"], event["type"], event["outcome"]) == (
        sold["id"],
        "checkout.session.completed",
        "accepted",
    )
    assert [(a["attempt"], a["status"], a["outcome"]) for a in told["attempts"]] == [
        (1, 503, "retried"),
        (2, 200, "delivered"),
    ]
    assert "upstream down" in told["attempts"][0]["error"]
    assert told["deadLetter"] is None
    [clawback] = told["refunds"]
    assert clawback["id"] == f"refund_{refund['id']}"
    assert clawback["sent"] == {"externalId": session, "amount": 1000, "reason": "refund"}
    assert [a["outcome"] for a in clawback["attempts"]] == ["sent"]
    assert clawback["events"][0]["eventId"] == refund["id"]
    text = stack.cli("show", intent).stdout
    assert text.splitlines()[0] == f"payment {session}  delivered"
    assert f"conversionId {row['id']}" in text
    assert "#1" in text and "503" in text and "#2" in text


def test_a_dead_lettered_sale_says_why(stack: Stack) -> None:
    session, intent = new_id("cs_test_show_"), new_id("pi_show_")
    stack.refcampaign.per_conversion[session] = Scripted(422, '{"success":false}')
    sold = checkout(session, intent)
    stack.stripe_event(sold)
    stack.wait_status(session, "dead")
    told = same_story(stack, session, sold["id"], intent)
    assert told["state"] == "dead_lettered"
    assert told["conversionId"] is None
    assert told["deadLetter"]["reason"] == "invalid_payload"
    assert told["deadLetter"]["status"] == 422
    assert [(a["status"], a["outcome"]) for a in told["attempts"]] == [(422, "dead_lettered")]
    assert "dead letter  invalid_payload" in stack.cli("show", session).stdout


def unattributed_ipn(txn_id: str, track_id: str) -> bytes:
    """A PayPal sale that names no affiliate: no `custom`, no payer email."""
    return urlencode(
        {
            "mc_gross": "20.00",
            "payment_status": "Completed",
            "charset": "windows-1252",
            "txn_id": txn_id,
            "receiver_email": "seller@paypalsandbox.com",
            "txn_type": "web_accept",
            "mc_currency": "USD",
            "ipn_track_id": track_id,
        }
    ).encode()


def test_an_unattributed_ipn_sale_by_txn_id_and_ipn_track_id(stack: Stack) -> None:
    txn, track = new_id("TXSHOW").upper(), secrets.token_hex(6)
    stack.ipn(unattributed_ipn(txn, track))
    wait_until(lambda: stack.cli("show", txn).returncode == 0, what="its story")
    told = same_story(stack, txn, track)
    assert told["externalId"] == txn
    assert told["state"] == "unattributed"
    assert told["reason"] == "no_attribution_id"
    assert told["conversionId"] is None and told["attempts"] == []
    [event] = told["events"]
    assert (event["provider"], event["type"], event["outcome"]) == (
        "paypal",
        "web_accept",
        "unattributed",
    )
    assert event["ipnTrackId"] == track
    assert told["attribution"] == {"from": "event", "attributedFrom": None}
    text = stack.cli("show", track).stdout.splitlines()
    assert text[:2] == [f"payment {txn}  unattributed", "  why          no_attribution_id"]
    assert "  attribution  none" in text
    assert stack.refcampaign.requests == []


def test_a_paypal_rest_capture_by_event_id_and_capture_id(stack: Stack) -> None:
    capture = new_id("8SHOW").upper()
    event = rest_capture(capture)
    stack.paypal_event(event)
    wait_until(lambda: capture in stack.refcampaign.conversions, timeout=20, what="the capture")
    stack.wait_status(capture, "delivered")
    told = same_story(stack, capture, event["id"])
    assert told["state"] == "delivered"
    assert told["conversionId"] == stack.refcampaign.conversions[capture]["id"]
    assert told["events"][0]["type"] == "PAYMENT.CAPTURE.COMPLETED"


def test_an_ignored_event_names_its_rule(stack: Stack) -> None:
    session = new_id("cs_test_unpaid_")
    event = checkout(session, new_id("pi_"))
    event["data"]["object"]["payment_status"] = "unpaid"
    stack.stripe_event(event)
    told = same_story(stack, session, event["id"])
    assert told["state"] == "ignored"
    assert told["reason"]
    assert told["events"][0]["outcome"] == "ignored"


def test_an_unknown_id_exits_1_with_one_line(stack: Stack) -> None:
    result = stack.cli("show", "evt_nobody_knows_this")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "refbridge: show: nothing is known of evt_nobody_knows_this (kept 30 days)"
    ]


def test_a_sale_attributed_from_memory_says_from_which(stack: Stack) -> None:
    customer = new_id("cus_show_")
    first, second = new_id("cs_test_show_"), new_id("cs_test_show_")
    sold = checkout(first, new_id("pi_show_"))
    sold["data"]["object"]["customer"] = customer
    stack.stripe_event(sold)
    again = checkout(second, new_id("pi_show_"))
    again["data"]["object"].update(customer=customer, metadata={})
    stack.stripe_event(again)
    stack.wait_status(second, "delivered")
    told = show(stack, again["id"])
    assert told["attribution"]["sessionId"] == "rcs_refund"
    assert told["attribution"]["attributedFrom"] == first
    assert told["attribution"]["from"] == "memory"
    assert f"(remembered from {first})" in stack.cli("show", second).stdout


def test_a_delivered_ipn_sale_by_txn_id_and_ipn_track_id(stack: Stack) -> None:
    from urllib.parse import parse_qs

    from tests.integration.test_refunds import ipn_sale

    txn = new_id("TXSHOW").upper()
    body = ipn_sale(txn)
    track = parse_qs(body.decode())["ipn_track_id"][0]
    stack.ipn(body)
    stack.wait_status(txn, "delivered")
    told = same_story(stack, txn, track)
    assert told["state"] == "delivered"
    assert told["conversionId"] == stack.refcampaign.conversions[txn]["id"]
    assert told["attribution"]["sessionId"] == "rcs_ipn_refund"
