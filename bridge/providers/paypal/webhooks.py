"""PayPal REST webhook events: parsing, the verification request body and mapping to conversions.

Pure functions only: the web process reads `parse_event(raw)` of a body nobody has verified yet,
the worker POSTs `verification_body(raw, headers, webhook_id)` to PayPal's
`/v1/notifications/verify-webhook-signature` and, once PayPal answered `SUCCESS`, maps the event
with `map_webhook_event`. None of the functions here raises on any input: outcomes are
`Conversion | Ignored | Rejected` values (docs/mapping.md, PayPal REST webhooks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.conversion import (
    Conversion,
    Handles,
    Ignored,
    MappingResult,
    Rejected,
    handles_of,
    iso_utc,
)
from bridge.providers.paypal.amounts import exact_amount, paypal_id
from bridge.providers.paypal.ipn import TrackingIds, tracking_ids
from bridge.providers.paypal.refunds import REFUND_EVENTS, map_event_refund

__all__ = [
    "CAPTURE_COMPLETED",
    "MAX_EVENT_ID_LENGTH",
    "SALE_COMPLETED",
    "TRANSMISSION_HEADERS",
    "capture_order_id",
    "map_webhook_event",
    "parse_event",
    "verification_body",
]

TRANSMISSION_HEADERS: tuple[str, ...] = (
    "PAYPAL-TRANSMISSION-ID",
    "PAYPAL-TRANSMISSION-TIME",
    "PAYPAL-TRANSMISSION-SIG",
    "PAYPAL-CERT-URL",
    "PAYPAL-AUTH-ALGO",
)
# verify-webhook-signature's request fields, each read from one transmission header.
_VERIFY_FIELDS = (
    ("auth_algo", "PAYPAL-AUTH-ALGO"),
    ("cert_url", "PAYPAL-CERT-URL"),
    ("transmission_id", "PAYPAL-TRANSMISSION-ID"),
    ("transmission_sig", "PAYPAL-TRANSMISSION-SIG"),
    ("transmission_time", "PAYPAL-TRANSMISSION-TIME"),
)
CAPTURE_COMPLETED = "PAYMENT.CAPTURE.COMPLETED"
SALE_COMPLETED = "PAYMENT.SALE.COMPLETED"
# PayPal's ids are short runs of letters, digits and dashes ("WH-…", "5VK462069F664902F"). The
# bound and the alphabet keep a ledger key, a log line and an order look-up's URL path small and
# plain whatever an unverified body says (no "/", "@", space or control character).
MAX_EVENT_ID_LENGTH = 128
_MAX_DETAIL = 60
_MAX_TIME_LENGTH = 40
# No PayPal field is a number this long (amounts are strings); refusing longer ones keeps int()
# and float() far from their superlinear cost on huge digit strings.
_MAX_NUMBER_LENGTH = 40
# The documented values of a capture's `status` and a sale's `state`: anything else is counted
# as "other", so a reason word never carries arbitrary text into a metric label.
_CAPTURE_STATUSES = frozenset(
    {"completed", "declined", "partially_refunded", "pending", "refunded", "failed"}
)
_SALE_STATES = frozenset({"completed", "partially_refunded", "pending", "refunded", "denied"})


def parse_event(raw: bytes) -> dict[str, Any] | None:
    """The event in `raw` when it is a JSON object with an `id`, `event_type` and `resource`."""
    try:
        event = json.loads(
            raw.decode("utf-8"),
            parse_int=_bounded_int,
            parse_float=_bounded_float,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError, MemoryError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        return None
    if not isinstance(event, dict):
        return None
    if _event_id(event) is None or not isinstance(event.get("event_type"), str):
        return None
    if not isinstance(event.get("resource"), dict):
        return None
    return event


def verification_body(raw: bytes, headers: Mapping[str, str], webhook_id: str) -> bytes:
    """The JSON body of `verify-webhook-signature`, with `raw` spliced in as `webhook_event`."""
    # PayPal checks the signature over the event bytes exactly as it sent them; an event parsed
    # and serialized again (other key order, other spacing) comes back FAILURE:
    # https://github.com/paypal/PayPal-NET-SDK/issues/353 and
    # https://github.com/paypal/PayPal-Python-SDK/issues/175 (order), /196 (pp-randy: "The actual
    # JSON string is what is validated against, so it needs to match exactly how it was sent").
    lowered = _lowered(headers)
    fields = {name: lowered.get(header.lower(), "") for name, header in _VERIFY_FIELDS}
    fields["webhook_id"] = webhook_id if isinstance(webhook_id, str) else ""
    head = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return head[:-1].encode("ascii") + b',"webhook_event":' + raw + b"}"


def capture_order_id(event: Mapping[str, Any]) -> str | None:
    """The order a capture belongs to (`resource.supplementary_data.related_ids.order_id`)."""
    related = _path(event, "resource", "supplementary_data", "related_ids")
    return paypal_id(related.get("order_id")) if related is not None else None


def map_webhook_event(event: Mapping[str, Any], *, recurring: bool) -> MappingResult:
    """The conversion a verified event stands for, or why none (docs/mapping.md)."""
    try:
        return _map(event, recurring)
    except Exception as error:  # noqa: BLE001 - a Mapping of any make must not crash the worker
        return Rejected("malformed_event", type(error).__name__)


def _map(event: Mapping[str, Any], recurring: bool) -> MappingResult:
    if not isinstance(event, Mapping):
        return Rejected("malformed_event", "not an object")
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        return Rejected("missing_event_type")
    if event_type not in (CAPTURE_COMPLETED, SALE_COMPLETED, *REFUND_EVENTS):
        return Ignored("unhandled_event_type", _detail(event_type))
    event_id = _event_id(event)
    if event_id is None:
        return Rejected("bad_event_id")
    resource = event.get("resource")
    if not isinstance(resource, Mapping):
        return Rejected("missing_resource")
    if event_type in REFUND_EVENTS:
        return map_event_refund(event_type, resource)
    if event_type == CAPTURE_COMPLETED:
        return _map_capture(event_id, resource)
    if not recurring:
        return Ignored("recurring_disabled", event_type)
    return _map_sale(event_id, resource)


def _map_capture(event_id: str, capture: Mapping[str, Any]) -> MappingResult:
    status = capture.get("status")
    if status != "COMPLETED":
        return Ignored(_state_reason("capture_status", status, _CAPTURE_STATUSES), _detail(status))
    amount = capture.get("amount")
    if not isinstance(amount, Mapping):
        return Rejected("bad_amount", "resource.amount is missing")
    return _conversion(
        event_id,
        CAPTURE_COMPLETED,
        capture,
        amount.get("value"),
        amount.get("currency_code"),
        capture.get("custom_id"),
    )


def _map_sale(event_id: str, sale: Mapping[str, Any]) -> MappingResult:
    state = sale.get("state")
    if state != "completed":
        return Ignored(_state_reason("sale_state", state, _SALE_STATES), _detail(state))
    amount = sale.get("amount")
    if not isinstance(amount, Mapping):
        return Rejected("bad_amount", "resource.amount is missing")
    return _conversion(
        event_id,
        SALE_COMPLETED,
        sale,
        amount.get("total"),
        amount.get("currency"),
        sale.get("custom"),
    )


def _conversion(
    event_id: str,
    event_type: str,
    resource: Mapping[str, Any],
    value: object,
    currency: object,
    custom: object,
) -> MappingResult:
    external_id = paypal_id(resource.get("id"))
    if external_id is None:
        return Rejected("missing_resource_id")
    if not isinstance(currency, str):
        return Rejected("bad_currency", "the amount has no currency code")
    if not isinstance(value, str):
        return Rejected("bad_amount", "the amount is not a decimal string")
    amount = exact_amount(value, currency)
    if isinstance(amount, Rejected):
        return amount
    if amount <= 0:
        return Rejected("bad_amount", "a sale's amount must be positive")
    ids = _attribution(custom)
    payer_id = _payer_id(resource)
    customer = handles_of(
        ("paypal:sub", paypal_id(resource.get("billing_agreement_id"))),
        ("paypal:payer", payer_id),
    )
    return Conversion(
        external_id=external_id,
        conversion_type="SALE",
        amount=amount,
        currency=currency.upper(),
        session_id=ids.session_id,
        click_id=ids.click_id,
        affiliate_code=ids.affiliate_code,
        customer_id=payer_id,
        converted_at=_converted_at(resource.get("create_time")),
        metadata={"source": "paypal", "eventId": event_id, "eventType": event_type},
        handles=Handles(customer, handles_of(("paypal:txn", external_id))),
    )


def _attribution(custom: object) -> TrackingIds:
    """The ids in `custom_id` / `custom`, read as IPN's `custom` (an e-mail address left out)."""
    if not isinstance(custom, str):
        return TrackingIds()
    return tracking_ids(_valid_text(custom))


def _payer_id(resource: Mapping[str, Any]) -> str | None:
    """The payer id where the resource carries one (`payer.payer_id` or `payer.payer_info`)."""
    for path in (("payer", "payer_id"), ("payer", "payer_info", "payer_id")):
        parent = _path(resource, *path[:-1])
        if parent is not None and (payer_id := paypal_id(parent.get(path[-1]))) is not None:
            return payer_id
    return None


def _converted_at(value: object) -> str | None:
    """`create_time` (RFC 3339, e.g. `2018-08-15T19:14:04.543Z`) as ISO 8601 UTC."""
    if not isinstance(value, str) or len(value) > _MAX_TIME_LENGTH:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:  # PayPal always states the offset; a guess would mislead
            return None
        return iso_utc(moment)
    except (ValueError, OverflowError):
        return None


def _event_id(event: Mapping[str, Any]) -> str | None:
    return paypal_id(event.get("id"))


def _path(mapping: Mapping[str, Any], *keys: str) -> Mapping[str, Any] | None:
    """The object at `mapping[k1][k2]…`, or None when any step is not an object."""
    current: object = mapping
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current if isinstance(current, Mapping) else None


def _state_reason(prefix: str, value: object, known: frozenset[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        return f"{prefix}_missing"
    word = value.strip().lower()
    return f"{prefix}_{word}" if word in known else f"{prefix}_other"


def _detail(value: object) -> str:
    """A short printable trace of a value for the record, never the whole of it."""
    if not isinstance(value, str):
        return type(value).__name__
    text = _valid_text(value[:_MAX_DETAIL])
    return "".join(char if char.isprintable() else "?" for char in text)


def _valid_text(value: str) -> str:
    """`value` with lone surrogates (which JSON's `\\ud800` escapes can spell) replaced."""
    return value.encode("utf-8", "replace").decode("utf-8")


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers by lower-cased name (the first of duplicates wins); non-text values dropped."""
    lowered: dict[str, str] = {}
    try:
        items = list(headers.items())
    except Exception:  # noqa: BLE001 - no headers is what a broken mapping amounts to
        return lowered
    for name, value in items:
        if isinstance(name, str) and isinstance(value, str):
            lowered.setdefault(name.lower(), value)
    return lowered


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_LENGTH:
        raise ValueError("number too long")
    return int(text)


def _bounded_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_NUMBER_LENGTH else math.inf
    if not math.isfinite(value):  # "1e999" is a JSON number, and an infinite float
        raise ValueError("number too long")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
