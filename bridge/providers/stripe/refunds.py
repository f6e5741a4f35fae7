"""Map a verified Stripe refund or dispute event to a Refund (SPEC, Refunds and chargebacks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from bridge.conversion import Ignored, handles_of
from bridge.refund import Refund

CHARGE_REFUNDED = "charge.refunded"
DISPUTE_CLOSED = "charge.dispute.closed"
REFUND_EVENT_TYPES = (CHARGE_REFUNDED, DISPUTE_CLOSED)
_MAX_ID = 255
_MAX_AMOUNT = 10**12


def map_stripe_refund(event: Mapping[str, Any], obj: Mapping[str, Any]) -> Refund | Ignored:
    """The refund a `charge.refunded` or lost `charge.dispute.closed` stands for, or why none."""
    if event.get("type") == CHARGE_REFUNDED:
        return _charge_refunded(event, obj)
    return _dispute_closed(obj)


def _charge_refunded(event: Mapping[str, Any], charge: Mapping[str, Any]) -> Refund | Ignored:
    """A charge's refunds so far: `amount_refunded` is their running total."""
    charge_id, event_id = stripe_id(charge.get("id")), stripe_id(event.get("id"))
    refunded, amount = charge.get("amount_refunded"), charge.get("amount")
    if charge_id is None or event_id is None:
        return Ignored("malformed_object", "the charge or event id is missing")
    if not _minor_units(refunded) or not _minor_units(amount) or refunded > amount:
        return Ignored("malformed_object", "amount or amount_refunded is not valid")
    if refunded == 0:
        return Ignored("nothing_refunded", "amount_refunded is 0")
    intent, invoice = stripe_id(charge.get("payment_intent")), stripe_id(charge.get("invoice"))
    return Refund(
        key=event_id,
        reason="refund",
        handles=_handles(charge_id, intent, invoice),
        currency=_currency(charge.get("currency")),
        charge=charge_id,
        charge_refunded=refunded,
        charge_amount=amount,
        payment_intent=intent,
        invoice=invoice,
    )


def _dispute_closed(dispute: Mapping[str, Any]) -> Refund | Ignored:
    """A dispute the merchant lost takes the whole sale back; any other ending, nothing."""
    status = dispute.get("status")
    if status != "lost":
        shown = status if isinstance(status, str) and status.isidentifier() else "other"
        return Ignored(f"dispute_{shown[:30]}", "only a lost dispute is a chargeback")
    dispute_id, charge = stripe_id(dispute.get("id")), stripe_id(dispute.get("charge"))
    if dispute_id is None or charge is None:
        return Ignored("malformed_object", "the dispute or its charge id is missing")
    amount = dispute.get("amount")
    if not _minor_units(amount) or amount == 0:
        return Ignored("malformed_object", "amount is not valid")
    intent = stripe_id(dispute.get("payment_intent"))
    return Refund(
        key=dispute_id,
        reason="chargeback",
        handles=_handles(charge, intent, None),
        currency=_currency(dispute.get("currency")),
        charge=charge,
        dispute_amount=amount,
        payment_intent=intent,
    )


def _handles(charge: str, intent: str | None, invoice: str | None) -> tuple[str, ...]:
    """The payment's handles, as a recorded conversion left them (stripe/mapping.py)."""
    return handles_of(("stripe:ch", charge), ("stripe:pi", intent), ("stripe:in", invoice))


def stripe_id(value: object) -> str | None:
    """An id, whether the field holds it or the expanded object; None unless a sane string."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID:
        return None
    return value.strip()


def _minor_units(value: object) -> TypeGuard[int]:
    """A non-negative whole amount that Redis's Lua numbers hold exactly (Stripe's are 8 digits
    at most; a larger one would break the running total in lua/refund_gate.lua)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_AMOUNT


def _currency(value: object) -> str | None:
    return value.upper() if isinstance(value, str) and len(value) == 3 else None
