"""Every row of the PayPal IPN table (docs/mapping.md) end to end, in windows-1252 and UTF-8."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from bridge import create_app
from config import Settings
from tests.processes import WorkerProcess

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
RECEIVER = "shop@example.com"


def message(charset: str, n: int, **fields: str) -> bytes:
    """An IPN body with the fields PayPal sends for a payment, encoded in `charset`."""
    base = {
        "mc_gross": "19.95",
        "protection_eligibility": "Eligible",
        "address_status": "confirmed",
        "payer_id": "LPLWNMTBWMFAY",
        "tax": "0.00",
        "address_street": "1 Main Stra\u00dfe",
        "payment_date": "20:12:59 Jan 13, 2009 PST",
        "payment_status": "Completed",
        "charset": charset,
        "address_zip": "95131",
        "first_name": "J\u00f6rg",
        "mc_fee": "0.88",
        "address_country_code": "DE",
        "address_name": "J\u00f6rg M\u00fcller",
        "notify_version": "3.9",
        "custom": f"rcsid=rcs_{n}&cid=clk_{n}",
        "payer_status": "verified",
        "business": RECEIVER,
        "address_country": "Germany",
        "address_city": "K\u00f6ln",
        "quantity": "1",
        "verify_sign": "AtkOfCXbDm2hu0ZELryHFjY",
        "payer_email": f"K\u00e4ufer{n}@Example.DE",
        "txn_id": f"61E67681CH32383{n:02d}",
        "payment_type": "instant",
        "last_name": "M\u00fcller",
        "address_state": "NRW",
        "receiver_email": RECEIVER,
        "payment_fee": "0.88",
        "receiver_id": "S8XGHLYDW9T3S",
        "txn_type": "web_accept",
        "item_name": "Gr\u00fcner Tee",
        "mc_currency": "EUR",
        "item_number": "AK-1234",
        "residence_country": "DE",
        "handling_amount": "0.00",
        "transaction_subject": "",
        "payment_gross": "",
        "shipping": "0.00",
        "ipn_track_id": f"track{n:04d}",
    }
    base.update(fields)
    return urlencode(base, encoding=charset).encode("ascii")


def email_hash(n: int) -> str:
    return hashlib.sha256(f"k\u00e4ufer{n}@example.de".encode()).hexdigest()


def sale(n: int, txn_type: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
    return {
        "externalId": f"61E67681CH32383{n:02d}",
        "conversionType": "SALE",
        "amount": amount,
        "currency": currency,
        "sessionId": f"rcs_{n}",
        "clickId": f"clk_{n}",
        "customerEmailHash": email_hash(n),
        "customerId": "LPLWNMTBWMFAY",
        "convertedAt": "2009-01-14T04:12:59Z",
        "metadata": {"source": "paypal", "txnType": txn_type, "ipnTrackId": f"track{n:04d}"},
    }


# (fields, expected payload or None) — one row per line of that table.
ROWS: list[tuple[dict[str, str], dict[str, Any] | None]] = [
    ({"txn_type": "web_accept"}, sale(1, "web_accept", 1995)),
    ({"txn_type": "cart", "num_cart_items": "1", "mc_gross_1": "19.95"}, sale(2, "cart", 1995)),
    ({"txn_type": "express_checkout"}, sale(3, "express_checkout", 1995)),
    ({"txn_type": "virtual_terminal"}, sale(4, "virtual_terminal", 1995)),
    ({"txn_type": "subscr_payment", "subscr_id": "I-SUB5"}, sale(5, "subscr_payment", 1995)),
    (
        {"txn_type": "recurring_payment", "recurring_payment_id": "I-RP6"},
        sale(6, "recurring_payment", 1995),
    ),
    (
        {"txn_type": "web_accept", "mc_currency": "JPY", "mc_gross": "1500"},
        sale(7, "web_accept", 1500, "JPY"),
    ),
    (
        {"txn_type": "web_accept", "mc_currency": "KWD", "mc_gross": "1.234"},
        sale(8, "web_accept", 1234, "KWD"),
    ),
    (
        {
            "txn_type": "subscr_signup",
            "subscr_id": "I-TRIAL9",
            "mc_amount1": "0.00",
            "period1": "7 D",
            "mc_amount3": "19.95",
            "period3": "1 M",
            "subscr_date": "20:12:59 Jan 13, 2009 PST",
            "payment_status": "",
            "txn_id": "",
            "mc_gross": "",
        },
        {
            "externalId": "I-TRIAL9",
            "conversionType": "TRIAL",
            "amount": 0,
            "currency": "EUR",
            "sessionId": "rcs_9",
            "clickId": "clk_9",
            "customerEmailHash": email_hash(9),
            "customerId": "LPLWNMTBWMFAY",
            "convertedAt": "2009-01-14T04:12:59Z",
            "metadata": {"source": "paypal", "txnType": "subscr_signup", "ipnTrackId": "track0009"},
        },
    ),
    (
        {
            "txn_type": "subscr_signup",
            "subscr_id": "I-PAID10",
            "mc_amount3": "19.95",
            "payment_status": "",
            "txn_id": "",
        },
        None,
    ),
    ({"payment_status": "Pending", "pending_reason": "echeck"}, None),
    (
        {
            "payment_status": "Refunded",
            "txn_type": "",
            "reason_code": "refund",
            "parent_txn_id": "61E67681CH3238301",
            "mc_gross": "-19.95",
        },
        None,
    ),
    ({"payment_status": "Reversed", "txn_type": "", "reason_code": "chargeback"}, None),
    ({"payment_status": "Denied"}, None),
    ({"receiver_email": "someone-else@example.com"}, None),
    ({"txn_type": "masspay"}, None),
    ({"mc_gross": "19.955"}, None),  # not exact in minor units
]


@pytest.mark.parametrize("charset", ["windows-1252", "UTF-8"])
def test_every_row_of_the_paypal_table(env, tmp_path, paypal, refcampaign, charset):
    env = {**env, "PAYPAL_RECEIVER_EMAILS": f" {RECEIVER.upper()} , other@example.com"}
    client = create_app(Settings.from_env(env)).test_client()
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        bodies = [message(charset, n, **fields) for n, (fields, _) in enumerate(ROWS, start=1)]
        for body in bodies:
            paypal.send(body)
            response = client.post("/webhooks/paypal/ipn", data=body, headers=FORM)
            assert (response.status_code, response.data) == (200, b"")
        forged = message(charset, 99, mc_gross="0.01")  # PayPal never sent it
        assert client.post("/webhooks/paypal/ipn", data=forged, headers=FORM).status_code == 200
        expected = {p["externalId"]: p for _, p in ROWS if p is not None}
        delivered = refcampaign.wait_for(len(expected), timeout=30)
        deadline = time.monotonic() + 10
        while len(paypal.requests) < len(bodies) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert {p["externalId"]: p for p in delivered} == expected
        # The Refunded row claws back the sale of the first row, after it: the whole of it.
        assert refcampaign.wait_for_refunds(1) == [
            {"externalId": "61E67681CH3238301", "reason": "refund"}
        ]
        assert len(refcampaign.requests) == len(expected) + 1
        sent = {r["body"] for r in paypal.requests}
        assert sent == {b"cmd=_notify-validate&" + b for b in [*bodies, forged]}
    finally:
        worker.stop()
