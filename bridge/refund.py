"""A refund or lost chargeback of a sale, as a provider reported it: what RefCampaign's refund
endpoint is told (SPEC, Refunds and chargebacks), once the worker knows which conversion it
undoes and that the conversion was delivered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Reason = Literal["refund", "chargeback"]
# Why a refund is recorded as nothing with REFUND_CLAWBACKS off.
CLAWBACKS_OFF = "refund_clawbacks_off"


@dataclass(frozen=True)
class Refund:
    """One provider event that takes money back from a sale.

    `key` names the refund itself (a Stripe event or dispute id, a PayPal refund's transaction
    id): its ledger id, so that a resend, or the same refund through IPN and a REST webhook, is
    one item. `external_id` is the conversion refunded when the event names it (PayPal); a
    Stripe charge names only its payment, found by `handles` (bridge/delivery/memory.py) or,
    failing that, by asking Stripe (`payment_intent`, `invoice`).

    `amount` (minor units) is what was refunded, None for the whole sale. A Stripe charge's
    refunds come as a running total: `charge` and `charge_refunded` (its `amount_refunded`)
    with `charge_amount`, the worker sending the increase over what it already sent.
    """

    key: str
    reason: Reason
    handles: tuple[str, ...] = ()
    external_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    charge: str | None = None
    charge_refunded: int | None = None
    charge_amount: int | None = None
    # A lost dispute: the amount lost (the worker sends what refunds left of the charge).
    dispute_amount: int | None = None
    payment_intent: str | None = None
    invoice: str | None = None

    @property
    def item_id(self) -> str:
        """Its ledger id."""
        return f"refund_{self.key}"

    def fields(self) -> dict[str, str]:
        """Its ledger fields (kind `refund`; "" for what it does not know)."""
        values: dict[str, Any] = {
            "external_id": self.external_id,
            "reason": self.reason,
            "handles": "\x1f".join(self.handles),
            "requested": self.amount,
            "currency": self.currency,
            "charge": self.charge,
            "charge_refunded": self.charge_refunded,
            "charge_amount": self.charge_amount,
            "dispute_amount": self.dispute_amount,
            "payment_intent": self.payment_intent,
            "invoice": self.invoice,
        }
        return {"kind": "refund", **{k: "" if v is None else str(v) for k, v in values.items()}}


def payload(external_id: str, amount: int | None, reason: str) -> dict[str, Any]:
    """The body of `POST /api/v1/conversions/refund`: no `amount` for a whole refund."""
    body: dict[str, Any] = {"externalId": external_id}
    if amount is not None:
        body["amount"] = amount
    body["reason"] = reason
    return body
