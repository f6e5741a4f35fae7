"""Map a verified PayPal refund or reversal, by IPN or REST webhook, to a Refund (SPEC, Refunds
and chargebacks). The same PayPal refund through both paths has the same `key`: one refund."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bridge.conversion import MAX_HANDLE_ID_LENGTH, MappingResult, Rejected, handles_of
from bridge.providers.paypal.amounts import exact_amount, paypal_id
from bridge.refund import Reason, Refund

# An IPN refund or reversal (chargeback) names its sale in `parent_txn_id`, with any txn_type.
REFUND_STATUSES: dict[str, Reason] = {"Refunded": "refund", "Reversed": "chargeback"}
CANCELED_REVERSAL = "canceled_reversal"
# Each REST refund event: is its resource a capture's refund (else a v1 sale's), and its reason.
REFUND_EVENTS: dict[str, tuple[bool, Reason]] = {
    "PAYMENT.CAPTURE.REFUNDED": (True, "refund"),
    "PAYMENT.CAPTURE.REVERSED": (True, "chargeback"),
    "PAYMENT.SALE.REFUNDED": (False, "refund"),
    "PAYMENT.SALE.REVERSED": (False, "chargeback"),
}
_CAPTURE_PATH = re.compile(r"/v2/payments/captures/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/?")
_MAX_LINKS = 10


def map_ipn_refund(fields: Mapping[str, str], reason: Reason) -> MappingResult:
    """The refund of `parent_txn_id`: `mc_gross` is negative, the amount taken back."""
    txn_id, parent = fields.get("txn_id", "").strip(), fields.get("parent_txn_id", "").strip()
    if not parent or len(parent) > MAX_HANDLE_ID_LENGTH:
        return Rejected("missing_parent_txn_id", "a refund names its sale in parent_txn_id")
    if not txn_id or len(txn_id) > MAX_HANDLE_ID_LENGTH:
        return Rejected("missing_txn_id")
    return _refund(
        txn_id, reason, parent, fields.get("mc_gross", ""), fields.get("mc_currency", "")
    )


def map_event_refund(event_type: str, refund: Mapping[str, Any]) -> MappingResult:
    """A refund of a capture (found by its `up` link; a v1 refund names its `capture_id`) or
    of a v1 sale (`sale_id`). Its amount as v2 writes it (`value`, `currency_code`) or v1
    (`total`, `currency`), with or without a minus sign."""
    capture, reason = REFUND_EVENTS[event_type]
    refund_id = paypal_id(refund.get("id"))
    if refund_id is None:
        return Rejected("missing_resource_id")
    if capture:
        sale = _capture_of(refund) or paypal_id(refund.get("capture_id"))
    else:
        sale = paypal_id(refund.get("sale_id"))
    if sale is None:
        return Rejected("missing_sale", "no capture link" if capture else "no sale_id")
    amount = refund.get("amount")
    if not isinstance(amount, Mapping):
        return Rejected("bad_amount", "resource.amount is missing")
    value = amount.get("value", amount.get("total"))
    currency = amount.get("currency_code", amount.get("currency"))
    if not isinstance(currency, str):
        return Rejected("bad_currency", "the amount has no currency code")
    if not isinstance(value, str):
        return Rejected("bad_amount", "the amount is not a decimal string")
    return _refund(refund_id, reason, sale, value, currency)


def _refund(
    refund_id: str, reason: Reason, sale: str, value: str, currency: str
) -> Refund | Rejected:
    """A PayPal refund of transaction `sale`: `value` with or without its minus sign, exact."""
    amount = exact_amount(value.strip().removeprefix("-"), currency)
    if isinstance(amount, Rejected):
        return amount
    if amount <= 0:
        return Rejected("bad_amount", "a refund's amount must not be 0")
    return Refund(
        key=f"paypal_{refund_id}",
        reason=reason,
        handles=handles_of(("paypal:txn", sale)),
        external_id=sale,
        amount=amount,
        currency=currency.upper(),
    )


def _capture_of(refund: Mapping[str, Any]) -> str | None:
    """The capture a v2 refund belongs to: its `links` entry with `rel` `up`."""
    links = refund.get("links")
    for link in links[:_MAX_LINKS] if isinstance(links, list) else ():
        if isinstance(link, Mapping) and link.get("rel") == "up":
            href = link.get("href")
            path = urlsplit(href).path if isinstance(href, str) and len(href) < 1000 else ""
            found = _CAPTURE_PATH.search(path)
            if found is not None and path.endswith(found.group(0)):
                return found.group(1)
    return None
