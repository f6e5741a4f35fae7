"""What a PayPal message comes to once PayPal answered for it: mapped and recorded, ignored,
rejected, or (PayPal did not send it) dropped, keeping nothing of it but counters and a marker.

Both kinds are here: an IPN (VERIFIED / INVALID) and a REST webhook event (SUCCESS / FAILURE).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import structlog

from bridge.conversion import Conversion, Ignored, Rejected, email_hash
from bridge.delivery import intake, paypal_api, story
from bridge.delivery.keys import item_number
from bridge.delivery.ledger import Claim, Ledger
from bridge.delivery.outcomes import RetryLater
from bridge.delivery.stats import stat
from bridge.providers.paypal.ipn import map_ipn, parse_ipn
from bridge.providers.paypal.refunds import CANCELED_REVERSAL
from bridge.providers.paypal.webhooks import map_webhook_event, parse_event
from bridge.refund import CLAWBACKS_OFF, Refund
from config import Settings

log = structlog.get_logger("refbridge.worker")


def reject(
    ledger: Ledger,
    claim: Claim,
    item: dict[str, str],
    reason: str,
    detail: str = "",
    named: tuple[str, str] = ("", ""),
) -> None:
    """Mark the item rejected (a verified message that maps to no valid conversion); `named`
    is the payment it names and its type, for its story."""
    fields = {"status": "rejected", "reason": reason, "raw": ""}
    provider = item.get("provider") or "paypal"
    rejected = stat("webhooks", provider=provider, outcome="rejected", reason=reason)
    ledger.mark_done(claim, fields, rejected)
    _record_rejected(ledger, claim, item, reason, detail)
    tell(ledger, item, named, outcome="rejected", reason=reason, detail=detail)


def tell(ledger: Ledger, item: dict[str, str], named: tuple[str, str], **what: str) -> None:
    """The story of a verified message that records no conversion (ignored, rejected), under
    the payment it names (`named`: its id and the message's type) else its event id."""
    event_id = item.get("event_id") or ""
    payment, event_type = named
    received_at = item_number(item, "received_at", time.time())
    provider = item.get("provider") or "paypal"
    entry = story.event_entry(provider, event_id, event_type, received_at, **what)
    story.tell(ledger.redis, payment or event_id, entry, [event_id])


def drop_forgery(ledger: Ledger, claim: Claim, item: dict[str, str]) -> None:
    """A message PayPal did not send: nothing of it is kept but counters, a marker and a line."""
    # Anyone can post these, as many as they like: a 30-day record of each would let them
    # fill Redis. The marker lets a replay of the same bytes pass as a duplicate for a while.
    if item.get("kind") == intake.PAYPAL_WEBHOOK:
        provider, reason = intake.PAYPAL_WEBHOOK, "verification_failure"
        seen = intake.paypal_event_seen_key(claim.item_id)
    else:
        provider, reason, seen = "paypal", "ipn_invalid", intake.ipn_seen_key(claim.item_id)
    rejected = stat("webhooks", provider=provider, outcome="rejected", reason=reason)
    if ledger.discard(claim, seen, rejected):
        _record_rejected(ledger, claim, item, reason)


def _record_rejected(
    ledger: Ledger, claim: Claim, item: dict[str, str], reason: str, detail: str = ""
) -> None:
    ledger.record_rejected(
        json.dumps(
            {
                "id": claim.item_id,
                "provider": item.get("provider"),
                "event_id": item.get("event_id"),
                "reason": reason,
                "detail": detail,
                "at": time.time(),
            }
        )
    )


def after_ipn(ledger: Ledger, settings: Settings, claim: Claim, item: dict[str, str]) -> str:
    """A VERIFIED IPN: map it and record its conversion; a short word for the outcome."""
    raw = base64.b64decode(item["raw"])
    fields = parse_ipn(raw)
    result = map_ipn(
        fields,
        recurring=settings.recurring_conversions,
        receiver_emails=settings.paypal_receiver_emails,
    )
    named = (fields.get("txn_id", ""), fields.get("txn_type") or fields.get("payment_status", ""))
    if isinstance(result, Rejected):
        reject(ledger, claim, item, result.reason, result.detail, named)
        return "rejected"
    done = {"status": "verified", "raw": ""}
    if isinstance(result, Refund):
        return _accept_refund(ledger, settings, claim, item, result, done)
    if isinstance(result, Ignored):
        if result.reason == CANCELED_REVERSAL:
            # Nothing undoes a clawback: a person must put the commission back by hand.
            log.warning(
                "chargeback_won_back",
                parent_txn_id=fields.get("parent_txn_id", "")[:64],
                provider_event_id=item.get("event_id"),
            )
        if result.remember is not None:  # a sign-up: its payments will carry no `custom`
            ledger.memory.remember(result.remember)
        ignored = stat("webhooks", provider="paypal", outcome="ignored", reason=result.reason)
        ledger.mark_done(claim, {**done, "reason": result.reason}, ignored)
        tell(ledger, item, named, outcome="ignored", reason=result.reason, detail=result.detail)
        return "ignored"
    return _accept_mapped(ledger, claim, item, result, done)


def after_event(
    ledger: Ledger, settings: Settings, claim: Claim, item: dict[str, str], api: paypal_api.Api
) -> str | RetryLater:
    """A REST event PayPal vouched for: map it and record its conversion; a short word for the
    outcome, or a RetryLater when its order's look-up must be tried again."""
    event = parse_event(base64.b64decode(item["raw"]))
    if event is None:  # it parsed at intake: a corrupt item
        reject(ledger, claim, item, "malformed_event")
        return "rejected"
    result = map_webhook_event(event, recurring=settings.recurring_conversions)
    resource = event.get("resource")
    named_id = resource.get("id") if isinstance(resource, dict) else None
    event_type = event.get("event_type")
    named = (
        named_id if isinstance(named_id, str) else "",
        event_type if isinstance(event_type, str) else "",
    )
    if isinstance(result, Rejected):
        reject(ledger, claim, item, result.reason, result.detail, named)
        return "rejected"
    done = {"status": "verified", "raw": "", "headers": ""}
    if isinstance(result, Refund):
        return _accept_refund(ledger, settings, claim, item, result, done)
    if isinstance(result, Ignored):
        ignored = stat(
            "webhooks", provider=intake.PAYPAL_WEBHOOK, outcome="ignored", reason=result.reason
        )
        ledger.mark_done(claim, {**done, "reason": result.reason}, ignored)
        tell(ledger, item, named, outcome="ignored", reason=result.reason, detail=result.detail)
        return "ignored"
    if not result.attributed:
        # A capture carries no buyer: its order may, for the customerEmailHash.
        email = paypal_api.capture_payer_email(api, event)
        if isinstance(email, RetryLater):
            return email
        if email:
            result = replace(result, customer_email_hash=email_hash(email))
    return _accept_mapped(ledger, claim, item, result, done, event_id=event["id"])


def _accept_refund(
    ledger: Ledger,
    settings: Settings,
    claim: Claim,
    item: dict[str, str],
    refund: Refund,
    done: dict[str, str],
) -> str:
    """Record a verified PayPal refund for delivery after its sale; mark the message done."""
    provider = item.get("provider") or "paypal"
    if not settings.refund_clawbacks:
        ignored = stat("webhooks", provider=provider, outcome="ignored", reason=CLAWBACKS_OFF)
        ledger.mark_done(claim, {**done, "reason": CLAWBACKS_OFF}, ignored)
        return "ignored"
    accepted = intake.accept_refund(
        ledger,
        refund,
        provider=provider,
        event_id=item.get("event_id") or refund.key,
        received_at=item_number(item, "received_at", time.time()),
    )
    ledger.mark_done(claim, {**done, "external_id": refund.item_id})
    return "verified" if isinstance(accepted, intake.Accepted) else "duplicate"


def _accept_mapped(
    ledger: Ledger,
    claim: Claim,
    item: dict[str, str],
    conversion: Conversion,
    done: dict[str, str],
    event_id: str = "",
) -> str:
    # The conversion's ledger id is its externalId: an IPN's txn_id and a REST capture's id
    # are the same value, so whichever of the two arrives second is a duplicate.
    accepted = intake.accept_conversion(
        ledger,
        conversion,
        provider=item.get("provider") or "paypal",
        event_id=event_id or conversion.external_id,
        received_at=item_number(item, "received_at", time.time()),
    )
    # Mark the IPN done only after its conversion is recorded: a crash in between re-verifies.
    ledger.mark_done(claim, {**done, "external_id": conversion.external_id})
    if isinstance(accepted, intake.Accepted):
        if accepted.attributed_from:
            log.info(
                "attributed_from_memory",
                externalId=conversion.external_id,
                attributedFrom=accepted.attributed_from,
            )
        return "verified"
    return "duplicate" if isinstance(accepted, intake.Duplicate) else "unattributed"
