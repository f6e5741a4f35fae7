"""Recording what arrived: a mapped conversion or a raw IPN becomes a ledger item, due now."""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge import json_text
from bridge.conversion import Conversion
from bridge.delivery import memory, story
from bridge.delivery.ledger import Entry, Ledger
from bridge.delivery.stats import stat
from bridge.refund import Refund


@dataclass(frozen=True)
class Accepted:
    """Recorded, its delivery task published; `attributed_from` names the conversion whose
    remembered ids it was given, if any."""

    item_id: str
    attributed_from: str | None = None


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
    """Record `conversion` for delivery unless it is unattributed or a duplicate.

    A conversion that names no affiliate itself is first given the ids remembered for its
    subscription or customer (bridge/delivery/memory.py); recording it leaves its own to
    remember, and tells its story (bridge/delivery/story.py), in the same round trip.
    """
    conversion = ledger.memory.attribute(conversion)
    told = story.conversion_told(conversion, provider, event_id, received_at, "webhook")
    if not conversion.attributed:
        ledger.count(stat("webhooks", provider=provider, outcome="unattributed"))
        ledger.memory.remember(conversion, sent=False)  # so that its refunds are not sent
        _tell_unattributed(ledger, conversion, told)
        return Unattributed()
    seen, fields = _conversion_entry(conversion, provider, event_id, received_at)
    recorded = ledger.enqueue(
        conversion.external_id,
        seen,
        fields,
        _intake_stats(provider),
        remember=memory.entries(conversion),
        told=told,
    )
    return Accepted(conversion.external_id, conversion.attributed_from) if recorded else Duplicate()


def _tell_unattributed(ledger: Ledger, conversion: Conversion, told: story.Told) -> None:
    """The story of a conversion that is not sent: it names no affiliate, nor did memory."""
    entry = story.conversion_entry(conversion, told, "unattributed")
    entry["reason"] = "no_attribution_id"
    looked = [h.split(":", 2)[-1] for h in conversion.handles.customer]
    if looked:
        entry["detail"] = "nothing remembered for " + ", ".join(looked)
    story.tell(ledger.redis, conversion.external_id, entry, told.aliases, replace_aliases=False)


def accept_refund(
    ledger: Ledger,
    refund: Refund,
    *,
    provider: str,
    event_id: str,
    received_at: float,
    stats: tuple[str, str] | None = None,
    event_type: str = "",
    via: str = "webhook",
) -> IntakeResult:
    """Record `refund` for a worker to match to its conversion and send once that conversion
    is delivered (bridge/delivery/refunds.py); Duplicate when this refund is recorded already
    (a resend, the same PayPal refund through IPN and a REST webhook, catch-up)."""
    fields: dict[str, str | float] = {
        **refund.fields(),
        "provider": provider,
        "event_id": event_id,
        "received_at": received_at,
    }
    entry = story.event_entry(
        provider,
        event_id,
        event_type,
        received_at,
        via=via,
        refund=refund.item_id,
        reason=refund.reason,
        externalId=refund.external_id or None,
    )
    # Its event id when the seen marker is not (a dispute's); a checkout's charge first shows
    # in its refund.
    aliases = (event_id if event_id != refund.key else "", refund.charge or "")
    told = story.Told(json_text.dumps(entry), aliases, via != "catchup")
    recorded = ledger.enqueue(
        refund.item_id,
        f"rb:seen:refund:{refund.key}",
        fields,
        _intake_stats(provider) if stats is None else stats,
        told=told,
    )
    return Accepted(refund.item_id) if recorded else Duplicate()


def seen_key(provider: str, event_id: str) -> str:
    """The key that marks a provider's event as recorded, so that a resend is a duplicate."""
    return f"rb:seen:{provider}:{event_id}"


def _conversion_entry(
    conversion: Conversion, provider: str, event_id: str, received_at: float
) -> tuple[str, dict[str, str | float]]:
    """The seen key and the ledger fields of a conversion."""
    fields: dict[str, str | float] = {
        "kind": "conversion",
        "provider": provider,
        "event_id": event_id,
        "external_id": conversion.external_id,
        "payload": json_text.dumps(conversion.to_payload()),
        "received_at": received_at,
    }
    return seen_key(provider, event_id), fields


def accept_conversions(
    ledger: Ledger,
    conversions: Sequence[tuple[Conversion, str]],
    *,
    provider: str,
    received_at: float,
    counter: str,
    counts: Mapping[str, int],
    via: str = "catchup",
) -> list[IntakeResult]:
    """`accept_conversion` for each (conversion, event id), in order, in one Redis pipeline
    (and one more round trip before each conversion that must be attributed from memory, so
    that it sees what the ones before it left).

    Outcomes are counted under `counter` (labels provider, outcome: accepted, duplicate,
    unattributed) rather than as webhooks; `counts` are added to their counters in the same trip.
    """
    stats = (
        stat(counter, provider=provider, outcome="accepted"),
        stat(counter, provider=provider, outcome="duplicate"),
    )
    pending: list[Entry] = []
    recorded: list[bool] = []
    attributed: list[bool] = []
    remembered_from: list[str | None] = []
    for conversion, event_id in conversions:
        if memory.asks_memory(conversion) and pending:
            recorded += ledger.enqueue_many(pending, stats, {})
            pending = []
        conversion = ledger.memory.attribute(conversion)
        told = story.conversion_told(conversion, provider, event_id, received_at, via)
        if not conversion.attributed:
            ledger.memory.remember(conversion, sent=False)  # so that its refunds are not sent
            _tell_unattributed(ledger, conversion, told)
        attributed.append(conversion.attributed)
        remembered_from.append(conversion.attributed_from)
        if conversion.attributed:
            seen, fields = _conversion_entry(conversion, provider, event_id, received_at)
            writes = memory.entries(conversion)
            pending.append((conversion.external_id, seen, fields, writes, told))
    extra = dict(counts)
    if not all(attributed):
        field = stat(counter, provider=provider, outcome="unattributed")
        extra[field] = extra.get(field, 0) + attributed.count(False)
    recorded += ledger.enqueue_many(pending, stats, extra)
    outcomes = iter(recorded)
    results: list[IntakeResult] = []
    for (conversion, _), was_attributed, source in zip(
        conversions, attributed, remembered_from, strict=True
    ):
        if not was_attributed:
            results.append(Unattributed())
        elif next(outcomes):
            results.append(Accepted(conversion.external_id, source))
        else:
            results.append(Duplicate())
    return results


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
