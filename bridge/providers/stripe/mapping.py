"""Map a verified Stripe event (plain JSON) to a RefCampaign conversion (docs/mapping.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from bridge.conversion import (
    Conversion,
    ConversionType,
    Handles,
    Ignored,
    contains_email,
    email_hash,
    handles_of,
    iso_utc,
)
from bridge.providers.stripe.refunds import REFUND_EVENT_TYPES, map_stripe_refund
from bridge.refund import Refund

# The metadata keys of each attribution id, first present wins (docs/mapping.md, Attribution).
# `refcampaign_session` is what RefCampaign's own server SDK writes (`getStripeMetadata()`).
SESSION_ID_KEYS = ("refcampaign_session", "rcsid", "sessionId")
CLICK_ID_KEYS = ("cid", "clickId")
AFFILIATE_CODE_KEYS = ("affiliateCode", "affiliate_code")
ATTRIBUTION_KEYS = SESSION_ID_KEYS + CLICK_ID_KEYS + AFFILIATE_CODE_KEYS
CUSTOM_PARAM_KEYS = ("s1", "s2", "s3", "s4", "s5")
# `attributedFrom` is the bridge's own word in metadata (docs/mapping.md): never the merchant's.
_CONSUMED_METADATA_KEYS = frozenset(ATTRIBUTION_KEYS + CUSTOM_PARAM_KEYS + ("attributedFrom",))
_CURRENCY = re.compile(r"[A-Za-z]{3}")
MAX_EXTERNAL_ID_LENGTH = 255  # RefCampaign's limit on `externalId`


@dataclass(frozen=True)
class _Row:
    """The table row an event matched: what to send, and which field of the object is the amount."""

    conversion_type: ConversionType
    amount_field: str | None  # None: a free trial, amount 0


_Rule = Callable[[Mapping[str, Any], bool], "_Row | Ignored"]


def map_stripe_event(event: Mapping[str, Any], *, recurring: bool) -> Conversion | Refund | Ignored:
    """The conversion (or refund) a verified Stripe event stands for, or why it stands for none."""
    if not isinstance(event, Mapping):
        return Ignored("malformed_event", "event is not an object")
    event_type = event.get("type")
    rule = _RULES.get(event_type) if isinstance(event_type, str) else None
    refund = event_type in REFUND_EVENT_TYPES
    if rule is None and not refund:
        return Ignored("unhandled_event_type", f"type {event_type!r}"[:120])
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return Ignored("malformed_event", "data.object is not an object")
    if rule is None:
        return map_stripe_refund(event, obj)
    row = rule(obj, recurring)
    if isinstance(row, Ignored):
        return row
    return _conversion(event, obj, row)


def _checkout_session_completed(session: Mapping[str, Any], recurring: bool) -> _Row | Ignored:
    """Paid → SALE; free subscription (trial) → TRIAL; unpaid (delayed method) → later."""
    payment_status = session.get("payment_status")
    mode = session.get("mode")
    if payment_status == "paid":
        return _Row("SALE", "amount_total")
    if payment_status == "no_payment_required" and mode == "subscription":
        return _Row("TRIAL", None)
    if payment_status == "unpaid":
        return Ignored("payment_pending", "counted on checkout.session.async_payment_succeeded")
    if mode == "setup":
        return Ignored("setup_mode", "a setup session takes no payment")
    if payment_status == "no_payment_required":
        return Ignored("no_payment_required", "only a subscription without payment is a trial")
    return Ignored("unhandled_payment_status", f"payment_status {payment_status!r}"[:120])


def _checkout_session_async_succeeded(session: Mapping[str, Any], recurring: bool) -> _Row:
    """A delayed payment (bank debit...) of a checkout session cleared."""
    return _Row("SALE", "amount_total")


def _checkout_session_async_failed(session: Mapping[str, Any], recurring: bool) -> Ignored:
    """A delayed payment of a checkout session failed: nothing to count."""
    return Ignored("payment_failed", "the delayed payment failed")


def _invoice_paid(invoice: Mapping[str, Any], recurring: bool) -> _Row | Ignored:
    """A renewal → SALE when recurring conversions are on; the first invoice was the checkout's."""
    billing_reason = invoice.get("billing_reason")
    if billing_reason == "subscription_create":
        return Ignored("first_invoice", "the subscription's checkout already counted it")
    if billing_reason != "subscription_cycle":
        return Ignored("not_a_renewal", f"billing_reason {billing_reason!r}"[:120])
    if not recurring:
        return Ignored("recurring_disabled", "RECURRING_CONVERSIONS is off")
    return _Row("SALE", "amount_paid")


def _payment_intent_succeeded(intent: Mapping[str, Any], recurring: bool) -> _Row | Ignored:
    """A custom payment flow's intent → SALE only when its metadata carries an attribution id."""
    # Without one it is usually the payment under a checkout session, counted there.
    metadata = _metadata(intent)
    if metadata is None:
        return _malformed("metadata")
    if _first_text(metadata, ATTRIBUTION_KEYS) is None:
        return Ignored("no_attribution_metadata", "no attribution id in metadata")
    return _Row("SALE", "amount_received")


_RULES: Mapping[str, _Rule] = {
    "checkout.session.completed": _checkout_session_completed,
    "checkout.session.async_payment_succeeded": _checkout_session_async_succeeded,
    "checkout.session.async_payment_failed": _checkout_session_async_failed,
    "invoice.paid": _invoice_paid,
    "payment_intent.succeeded": _payment_intent_succeeded,
}
# The event types the mapping reads: what a webhook endpoint subscribes to, what catch-up lists.
EVENT_TYPES: tuple[str, ...] = (*_RULES, *REFUND_EVENT_TYPES)


def _conversion(
    event: Mapping[str, Any], obj: Mapping[str, Any], row: _Row
) -> Conversion | Ignored:
    """The postback for a matched row, or Ignored when a field it needs is missing or mistyped."""
    external_id = _text(obj.get("id"))
    amount = 0 if row.amount_field is None else obj.get(row.amount_field)
    currency = obj.get("currency")
    metadata = _metadata(obj)
    converted_at = _converted_at(event.get("created"))
    event_id = _text(event.get("id"))
    if external_id is None or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
        return _malformed("id")
    if not _is_minor_units(amount):
        return _malformed(row.amount_field or "amount")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        return _malformed("currency")
    if metadata is None:
        return _malformed("metadata")
    if converted_at is None or event_id is None:
        return Ignored("malformed_event", "event id or created is missing or invalid")
    email = _customer_email(obj)
    sources = (metadata, *_subscription_metadata(obj))
    return Conversion(
        external_id=external_id,
        conversion_type=row.conversion_type,
        amount=amount,
        currency=currency.upper(),
        session_id=_attribution(sources, SESSION_ID_KEYS) or _text(obj.get("client_reference_id")),
        click_id=_attribution(sources, CLICK_ID_KEYS),
        affiliate_code=_attribution(sources, AFFILIATE_CODE_KEYS),
        customer_email_hash=email_hash(email) if email else None,
        customer_id=_id_of(obj.get("customer")),
        converted_at=converted_at,
        custom_params=_custom_params(metadata),
        metadata=_conversion_metadata(event, metadata),
        handles=_handles(obj),
    )


def _attribution(sources: tuple[Mapping[str, Any], ...], keys: tuple[str, ...]) -> str | None:
    """The first of `keys` present in the first metadata of `sources` that has one."""
    for metadata in sources:
        found = _first_text(metadata, keys)
        if found is not None:
            return found
    return None


def _subscription_metadata(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An invoice's copy of its subscription's metadata, in both API shapes: top-level
    `subscription_details` before 2025-03-31, `parent.subscription_details` since (basil)."""
    found = []
    for details in (_object_at(obj, "subscription_details"), _subscription_details(obj)):
        metadata = details.get("metadata") if details is not None else None
        if isinstance(metadata, Mapping):
            found.append(metadata)
    return found


def _subscription_details(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`parent.subscription_details` of a basil-shaped invoice."""
    parent = _object_at(obj, "parent")
    return _object_at(parent, "subscription_details") if parent is not None else None


def _handles(obj: Mapping[str, Any]) -> Handles:
    """Who paid (the subscription, then the customer) and for what (the object itself, its
    payment intent, charge and invoice), as far as the object names them."""
    details = _subscription_details(obj)
    subscription = details.get("subscription") if details is not None else None
    customer = (
        ("stripe:sub", _id_of(obj.get("subscription"))),
        ("stripe:sub", _id_of(subscription)),
        ("stripe:cus", _id_of(obj.get("customer"))),
    )
    # A refund names the intent, charge or invoice it refunds, never the checkout session.
    kind = obj.get("object")
    own_kind = _PAID_BY_ID.get(kind) if isinstance(kind, str) else None
    payment: list[tuple[str, object]] = [
        (own_kind or "", obj.get("id") if own_kind else None),
        ("stripe:pi", _id_of(obj.get("payment_intent"))),
        ("stripe:ch", _id_of(obj.get("charge"))),
        ("stripe:ch", _id_of(obj.get("latest_charge"))),
        ("stripe:in", _id_of(obj.get("invoice"))),
    ]
    # A basil invoice names its payments in `payments.data[].payment` (when included): a few,
    # never as many as a body could list.
    payments = _object_at(obj, "payments")
    listed = payments.get("data") if payments is not None else None
    for entry in listed[:_MAX_PAYMENTS] if isinstance(listed, list) else ():
        paid = _object_at(entry, "payment") if isinstance(entry, Mapping) else None
        if paid is not None:
            payment += [
                ("stripe:pi", _id_of(paid.get("payment_intent"))),
                ("stripe:ch", _id_of(paid.get("charge"))),
            ]
    return Handles(handles_of(*customer), handles_of(*payment))


_MAX_PAYMENTS = 4
# The objects a later refund can name by their own id, and their handles' kind.
_PAID_BY_ID = {"invoice": "stripe:in", "payment_intent": "stripe:pi"}


def _object_at(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """`obj[key]` when it is an object."""
    value = obj.get(key)
    return value if isinstance(value, Mapping) else None


def _id_of(value: object) -> str | None:
    """An id, whether the field holds it or the expanded object."""
    if isinstance(value, Mapping):
        return _text(value.get("id"))
    return _text(value)


def _malformed(field: str) -> Ignored:
    """The outcome for an object whose `field` is missing or mistyped."""
    return Ignored("malformed_object", f"{field} is missing or not valid")


def _is_minor_units(value: object) -> TypeGuard[int]:
    """True for a non-negative integer amount (bool is an int in Python; it is not an amount)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: object) -> str | None:
    """The value as a trimmed string; None when it is not a string or is blank."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _first_text(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first present, non-blank string among `keys` of `mapping`."""
    for key in keys:
        found = _text(mapping.get(key))
        if found is not None:
            return found
    return None


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's metadata (absent or null: empty); None when it is not an object."""
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    return metadata if isinstance(metadata, Mapping) else None


def _converted_at(created: object) -> str | None:
    """The event's `created` (Unix seconds) as ISO 8601 UTC; None when it is not a usable time."""
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    try:
        return iso_utc(datetime.fromtimestamp(created, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _customer_email(obj: Mapping[str, Any]) -> str | None:
    """The first present of `customer_details.email`, `customer_email`, `receipt_email`."""
    details = obj.get("customer_details")
    from_details = _text(details.get("email")) if isinstance(details, Mapping) else None
    return from_details or _first_text(obj, ("customer_email", "receipt_email"))


def _custom_params(metadata: Mapping[str, Any]) -> dict[str, str]:
    """`metadata.s1`…`s5` where present, as RefCampaign's `customParams`."""
    params = {key: _text(metadata.get(key)) for key in CUSTOM_PARAM_KEYS}
    return {key: value for key, value in params.items() if value and not _holds_email(value)}


def _conversion_metadata(event: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The bridge's record of the event, then the object's metadata not read for anything else."""
    merged: dict[str, Any] = {
        "source": "stripe",
        "eventId": event.get("id"),
        "eventType": event.get("type"),
        "livemode": event.get("livemode") is True,
    }
    for key, value in metadata.items():
        # The bridge's keys win over same-named merchant metadata.
        if isinstance(key, str) and key not in merged and key not in _CONSUMED_METADATA_KEYS:
            if not _holds_email(value):
                merged[key] = value
    return merged


def _holds_email(value: object) -> bool:
    """True for a string with an email address in it, as in `Jane <jane@example.com>`."""
    # The bridge never sends a plaintext email, not even one a merchant put in metadata.
    return isinstance(value, str) and contains_email(value)
