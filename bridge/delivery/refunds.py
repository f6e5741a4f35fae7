"""A refund's attempt before its POST: which conversion it undoes, whether that conversion
was sent, how much to claw back, and never before the conversion (SPEC, Refunds and
chargebacks). Its POST, retries, dead-letter and replay are the postbacks' own
(bridge/delivery/attempts.py).

The conversion: the one the provider names (PayPal), else the one memory remembers for the
payment (a Stripe charge's intent, charge or invoice), else the one Stripe's API names
(bridge/delivery/stripe_lookup.py). A refund of a conversion the bridge never sent (recorded
unattributed, a renewal with RECURRING_CONVERSIONS off, a purged dead letter) ends `not_sent`;
of a payment nobody knows, `unknown_payment`. lua/refund_gate.lua then decides the amount once
and holds the refund while its conversion is pending or dead-lettered.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from redis.commands.core import Script

from bridge.delivery import story, stripe_lookup
from bridge.delivery.keys import (
    DUE,
    REFUNDS_WAITING,
    SUSPECT,
    SUSPECTS_WAITING,
    UNDELIVERED,
    item_key,
    item_number,
    purged_key,
    waiting_refunds_key,
)
from bridge.delivery.ledger import Claim, Ledger
from bridge.delivery.outcomes import DeadLetter, RetryLater
from bridge.delivery.scripts import REFUND_GATE
from bridge.delivery.stats import STATS, stat
from config import Settings

log = structlog.get_logger("refbridge.worker")
REFUNDS = "refunds"  # the counter: refunds{outcome=…}
NOT_SENT = "not_sent"
UNKNOWN_PAYMENT = "unknown_payment"
# The longest a refund whose payment nobody names waits for its sale's webhook (_unknown).
SALE_GRACE = 600.0


@dataclass(frozen=True)
class Send:
    """Post this body to the refund endpoint now: its conversion was delivered."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Sale:
    """The conversion a refund undoes: its externalId, its amount when known, and how long to
    wait for it when the bridge has no record of it yet (None: not at all)."""

    external_id: str
    amount: int | None = None
    wait: float | None = None


Prepared = Send | str | RetryLater | DeadLetter
"""Send it; a word for what was done instead (waiting, not_sent…, already applied); or a
look-up's failure, applied as a postback failure is."""


def prepare(ledger: Ledger, settings: Settings, claim: Claim, until: float) -> Prepared:
    """Find the refund's conversion, decide its amount and let it go only after the sale;
    `until` (this host's clock) is when the attempt must have decided, so that its POST still
    ends inside the lease (a look-up that took longer is tried again, never sent late)."""
    item = claim.item
    if item.get("payload"):  # decided already: a retry, a replay, or released by its sale
        return _gate(ledger, settings, claim, Sale(item["external_id"]), "")
    sale = _sale(ledger, settings, item, claim.item_id)
    if isinstance(sale, RetryLater | DeadLetter):
        return sale
    if isinstance(sale, str):
        return _end(ledger, claim, item, sale)
    if time.time() > until:
        return RetryLater(None, "the refund's look-up took too long")
    return _gate(ledger, settings, claim, sale, _amount(item, sale.amount))


def _sale(
    ledger: Ledger, settings: Settings, item: dict[str, str], item_id: str
) -> Sale | str | RetryLater | DeadLetter:
    """The refund's conversion, or why there is none."""
    handles = [h for h in item.get("handles", "").split("\x1f") if h]
    remembered = ledger.memory.recall(handles, refresh=False)
    if remembered is not None:
        external_id = item.get("external_id") or remembered.external_id
        if not remembered.sent and not _recorded(ledger, external_id)[0]:
            story.link_refund(ledger.redis, external_id, item_id)
            return NOT_SENT  # recorded unattributed
        return Sale(external_id, remembered.amount)
    named = item.get("external_id")
    if named:  # PayPal names it: is it a sale the bridge recorded, or one on its way?
        recorded, amount = _recorded(ledger, named)
        return Sale(named, amount, None if recorded else settings.delivery_max_age)
    if not settings.stripe_api_key:
        return _unknown(settings, item)
    found = stripe_lookup.find_sale(
        settings, item.get("payment_intent", ""), item.get("invoice", "")
    )
    if isinstance(found, RetryLater | DeadLetter):
        return found
    if found.external_id is None:
        return _unknown(settings, item)
    if found.external_id == found.invoice and not settings.recurring_conversions:
        return NOT_SENT  # a renewal, never sent with RECURRING_CONVERSIONS off
    # A subscription's first payment, found through its invoice: its checkout, unattributed?
    by_invoice = [f"stripe:in:{found.invoice}"] if found.invoice else []
    again = ledger.memory.recall(by_invoice, refresh=False)
    recorded, amount = _recorded(ledger, found.external_id)
    if again is not None and not again.sent and not recorded:
        return NOT_SENT
    # A sale made before the grace (before the bridge was installed) is not waited for.
    made_before = found.created is not None and found.created < time.time() - sale_grace(settings)
    wait = None if recorded or made_before else settings.delivery_max_age
    return Sale(found.external_id, amount, wait)


def sale_grace(settings: Settings) -> float:
    """How long a refund whose payment nobody can name waits for its sale's webhook (memory
    then knows it): a tenth of the retry window, at most SALE_GRACE."""
    return min(SALE_GRACE, settings.delivery_max_age / 10)


def _unknown(settings: Settings, item: dict[str, str]) -> str | RetryLater:
    """A payment nobody names (no STRIPE_API_KEY, or Stripe knows no session or invoice of it):
    its sale's webhook may be behind the refund's, so it is tried again on the backoff for
    sale_grace() from the refund's arrival; then `unknown_payment`."""
    now = time.time()
    if now - item_number(item, "received_at", now) < sale_grace(settings):
        return RetryLater(None, "its sale is not recorded yet")
    return UNKNOWN_PAYMENT


def _recorded(ledger: Ledger, external_id: str) -> tuple[bool, int | None]:
    """Whether the ledger still holds conversion `external_id`, and its amount."""
    item = ledger.get(external_id)
    if item is None or item.get("kind") != "conversion":
        return (False, None)
    try:
        amount = json.loads(item.get("payload", "")).get("amount")
    except (ValueError, AttributeError):
        return (True, None)
    return (True, amount if isinstance(amount, int) else None)


def _amount(item: dict[str, str], sale_amount: int | None) -> str:
    """The gate's amount: 'charge' for a Stripe charge's running total, 'dispute' for a lost
    dispute (the rest of the charge), '' for a whole refund (a PayPal refund of the sale's whole
    amount), else the minor units refunded."""
    if item.get("charge_refunded"):
        return "charge"
    if item.get("dispute_amount"):
        return "dispute"
    requested = item.get("requested", "")
    if not requested.isdigit() or (sale_amount is not None and int(requested) == sale_amount):
        return ""
    return requested


def _gate(ledger: Ledger, settings: Settings, claim: Claim, sale: Sale, amount: str) -> Prepared:
    item = claim.item
    external_id = sale.external_id
    keys = [
        item_key(claim.item_id),
        item_key(external_id),
        waiting_refunds_key(external_id),
        f"rb:refunded:{item.get('charge') or '-'}",
        DUE,
        UNDELIVERED,
        SUSPECT,
        SUSPECTS_WAITING,
        STATS,
        REFUNDS_WAITING,
        purged_key(external_id),
    ]
    if amount == "dispute":  # the lost amount, out of the sale's (the dispute's when unknown)
        total, whole = item["dispute_amount"], str(sale.amount or item["dispute_amount"])
    else:
        total, whole = item.get("charge_refunded") or "0", item.get("charge_amount") or "0"
    args: list[str | int | float] = [
        claim.token,
        "",
        external_id,
        amount,
        total,
        whole,
        item.get("reason") or "refund",
        settings.attribution_memory_days * 86400,
        stat(REFUNDS, outcome="waiting"),
        "" if sale.wait is None else sale.wait,
    ]
    answer = [_text(part) for part in _script(ledger.redis)(keys=keys, args=args)]
    if answer[0] != "stale":
        story.link_refund(ledger.redis, external_id, claim.item_id)
    if answer[0] == "send":
        return Send(json.loads(answer[1]))
    if answer[0] in ("nothing_new", "purged"):
        return _end(ledger, claim, item, "sale_purged" if answer[0] == "purged" else answer[0])
    if answer[0] == "waiting":
        log.info("refund_waiting", item=claim.item_id, externalId=external_id)
    return answer[0]


def _end(ledger: Ledger, claim: Claim, item: dict[str, str], reason: str) -> str:
    """Record a refund that is not sent, and why; the reason as the attempt's word."""
    (log.warning if reason == UNKNOWN_PAYMENT else log.info)(
        "refund_not_sent", item=claim.item_id, reason=reason, provider=item.get("provider")
    )
    counter = stat(REFUNDS, outcome=reason if reason == UNKNOWN_PAYMENT else NOT_SENT)
    fields = {"status": NOT_SENT if reason != UNKNOWN_PAYMENT else UNKNOWN_PAYMENT}
    ledger.mark_done(claim, {**fields, "reason": reason}, counter)
    return reason


@functools.lru_cache(maxsize=8)
def _script(client: redis.Redis) -> Script:
    """lua/refund_gate.lua, registered once per client."""
    return client.register_script(REFUND_GATE)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
