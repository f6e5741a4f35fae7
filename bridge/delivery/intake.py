"""Recording what arrived: a mapped conversion or a raw IPN becomes a ledger item, due now."""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from dataclasses import dataclass

from bridge import json_text
from bridge.conversion import Conversion
from bridge.delivery.ledger import Ledger
from bridge.delivery.stats import stat


@dataclass(frozen=True)
class Accepted:
    """Recorded, due now, the workers nudged."""

    item_id: str


@dataclass(frozen=True)
class Duplicate:
    """Already recorded (a provider resend, or another event for the same externalId)."""


@dataclass(frozen=True)
class Unattributed:
    """A conversion with no attribution id: counted, never sent."""


IntakeResult = Accepted | Duplicate | Unattributed


def word(outcome: IntakeResult) -> str:
    """The outcome as a log word: accepted, duplicate or unattributed."""
    return type(outcome).__name__.lower()


def accept_conversion(
    ledger: Ledger, conversion: Conversion, *, provider: str, event_id: str, received_at: float
) -> IntakeResult:
    """Record `conversion` for delivery unless it is unattributed or a duplicate."""
    if not conversion.attributed:
        ledger.count(stat("webhooks", provider=provider, outcome="unattributed"))
        return Unattributed()
    fields: dict[str, str | float] = {
        "kind": "conversion",
        "provider": provider,
        "event_id": event_id,
        "external_id": conversion.external_id,
        "payload": json_text.dumps(conversion.to_payload()),
        "received_at": received_at,
    }
    seen = f"rb:seen:{provider}:{event_id}"
    recorded = ledger.enqueue(conversion.external_id, seen, fields, _intake_stats(provider))
    return Accepted(conversion.external_id) if recorded else Duplicate()


@functools.cache
def _intake_stats(provider: str) -> tuple[str, str]:
    """The counters a recorded / duplicate conversion adds one to."""
    return (
        stat("webhooks", provider=provider, outcome="accepted"),
        stat("webhooks", provider=provider, outcome="duplicate"),
    )


def ipn_item_id(raw: bytes) -> str:
    """The ledger id of a raw IPN message: PayPal resends the same bytes until it gets a 200."""
    return "ipn_" + hashlib.sha256(raw).hexdigest()[:32]


def ipn_seen_key(item: str) -> str:
    """The key that marks an IPN message as seen, so that a resend of its bytes is a duplicate."""
    return f"rb:seen:paypal-ipn:{item}"


def accept_ipn(ledger: Ledger, raw: bytes, track_id: str) -> IntakeResult:
    """Record a raw, not yet verified IPN message for verification by a worker."""
    item = ipn_item_id(raw)
    fields: dict[str, str | float] = {
        "kind": "ipn",
        "provider": "paypal",
        "event_id": track_id or item,
        "raw": base64.b64encode(raw).decode("ascii"),
        "received_at": time.time(),
    }
    # Its outcome (accepted, ignored, rejected...) is counted once verified; a resend now.
    stats = ("", stat("webhooks", provider="paypal", outcome="duplicate", reason="same_message"))
    recorded = ledger.enqueue(item, ipn_seen_key(item), fields, stats)
    return Accepted(item) if recorded else Duplicate()


PAYPAL_WEBHOOK = "paypal_webhook"


def paypal_event_item_id(event_id: str, raw: bytes) -> str:
    """The ledger id of a raw PayPal REST event: its id and a digest of its bytes.

    PayPal resends an event's same bytes until it gets a 200: a duplicate. The digest keeps a
    forged body that borrows a genuine event's id (nobody has verified either yet) from
    shadowing the genuine one; after verification the conversion's own dedupe on the event id
    and externalId holds.
    """
    return f"ppwh_{event_id}_{hashlib.sha256(raw).hexdigest()[:16]}"


def paypal_event_seen_key(item: str) -> str:
    """The key that marks a raw PayPal REST event as seen."""
    return f"rb:seen:{PAYPAL_WEBHOOK}:{item}"


def accept_paypal_event(
    ledger: Ledger, raw: bytes, headers: dict[str, str], event_id: str
) -> IntakeResult:
    """Record a raw, not yet verified PayPal REST event and its transmission headers for a
    worker to verify with PayPal."""
    item = paypal_event_item_id(event_id, raw)
    fields: dict[str, str | float] = {
        "kind": PAYPAL_WEBHOOK,
        "provider": PAYPAL_WEBHOOK,
        "event_id": event_id,
        "raw": base64.b64encode(raw).decode("ascii"),
        "headers": json_text.dumps(headers),
        "received_at": time.time(),
    }
    duplicate = stat("webhooks", provider=PAYPAL_WEBHOOK, outcome="duplicate", reason="same_event")
    recorded = ledger.enqueue(item, paypal_event_seen_key(item), fields, ("", duplicate))
    return Accepted(item) if recorded else Duplicate()
