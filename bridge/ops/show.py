"""`refbridge show ID`: the story of one payment, read from what the bridge kept of it
(bridge/delivery/story.py and the ledger item), by any id a person has in hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.conversion import iso_millis
from bridge.delivery.intake import PAYPAL_WEBHOOK
from bridge.delivery.keys import item_number, purged_key
from bridge.delivery.ledger import Ledger
from bridge.delivery.story import (
    ATTEMPTS_KEPT,
    ATTRIBUTION,
    attempts_key,
    events_key,
    id_key,
    refunds_key,
)

# The seen markers whose value names the story of the message (lua/enqueue.lua): a Stripe
# event's, a PayPal REST event's, a refund's.
SEEN_KINDS = ("stripe", PAYPAL_WEBHOOK, "refund")
STATES = {"pending": "pending", "delivered": "delivered", "dead": "dead_lettered"}
_MAX_ID = 255


@dataclass(frozen=True)
class Found:
    """Where an id leads: the story's name, and the refund item asked for, if it was one."""

    story: str
    refund: str | None = None


def find(ledger: Ledger, asked: str) -> Found | None:
    """The story `asked` belongs to; None when the bridge kept nothing of it."""
    asked = asked.strip()
    if not asked or len(asked) > _MAX_ID:
        return None
    pipe = ledger.redis.pipeline(transaction=False)
    for key in (id_key(asked), *(f"rb:seen:{kind}:{asked}" for kind in SEEN_KINDS)):
        pipe.get(key)
    named = [n.decode() for n in pipe.execute() if isinstance(n, bytes) and n != b"1"]
    target = named[0] if named else asked
    item = ledger.get(target) or {}
    if item.get("kind") == "refund":
        return Found(item.get("external_id") or target, target)
    if item.get("kind") in ("ipn", "paypal_webhook") and item.get("external_id"):
        return Found(item["external_id"])
    return Found(target)


def story(ledger: Ledger, asked: str) -> dict[str, Any] | None:
    """The whole story as SPEC's JSON object; None for an id the bridge knows nothing of."""
    found = find(ledger, asked)
    if found is None:
        return None
    name = found.story
    item = ledger.get(name) or {}
    conversion = item if item.get("kind") == "conversion" else {}
    # A refund not matched to a sale yet is its own story: told as a refund.
    events = [] if found.refund == name else _entries(ledger, events_key(name))
    refund_ids = _members(ledger, refunds_key(name))
    if found.refund:
        refund_ids.add(found.refund)
    refunds = [r for r in (_refund(ledger, i) for i in sorted(refund_ids)) if r is not None]
    if not conversion and not events and not refunds:
        return None
    payload = _payload(conversion)
    state, reason = _state(ledger, name, conversion, events)
    told: dict[str, Any] = {
        "id": asked.strip(),
        "externalId": payload.get("externalId") or _external_id(name, events, found),
        "state": state,
        "reason": reason,
        "conversion": _conversion(payload, events),
        "attribution": _attribution(payload, events),
        "conversionId": conversion.get("conversion_id") or None,
        "commissionId": conversion.get("commission_id") or None,
        "commissionAmount": _number(conversion.get("commission_amount")),
        "deliveredAt": _iso(conversion.get("delivered_at")),
        "nextAttemptAt": _iso(conversion.get("next_due")) if state == "pending" else None,
        "events": events,
        **_attempts(ledger, name, conversion),
        "deadLetter": _dead_letter(conversion),
        "refunds": refunds,
    }
    return told


def _state(
    ledger: Ledger, name: str, conversion: dict[str, str], events: list[dict[str, Any]]
) -> tuple[str, str | None]:
    """The payment's state, and the rule that decided it when nothing was sent."""
    if conversion:
        status = conversion.get("status", "")
        return STATES.get(status, status), conversion.get("reason") or None
    if ledger.redis.exists(purged_key(name)):
        return "purged", "dead-lettered, then purged: never sent"
    for entry in reversed(events):
        outcome = entry.get("outcome")
        if outcome == "unattributed":
            return "unattributed", entry.get("reason")
        if outcome in ("ignored", "rejected"):
            return "ignored", entry.get("reason")
    return "unknown", None  # a refund of a payment the bridge has no record of


def _external_id(name: str, events: list[dict[str, Any]], found: Found) -> str | None:
    for entry in reversed(events):
        if entry.get("externalId"):
            return str(entry["externalId"])
    return None if found.refund == name else name


def _payload(conversion: dict[str, str]) -> dict[str, Any]:
    try:
        payload = json.loads(conversion.get("payload") or "{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _conversion(payload: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What it maps to: the postback's type, amount and currency (else the last event's)."""
    source = payload or next((e for e in reversed(events) if e.get("conversionType")), {})
    if not source:
        return None
    return {k: source.get(k) for k in ("conversionType", "amount", "currency")}


def _attribution(payload: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The attribution ids sent (or, not sent, found) and where they came from: the event
    itself, or memory (the conversion they were remembered from)."""
    if payload:
        ids = {k: payload[k] for k in ATTRIBUTION if k in payload}
        metadata = payload.get("metadata")
        remembered = metadata.get("attributedFrom") if isinstance(metadata, dict) else None
    else:
        entry = next((e for e in reversed(events) if "conversionType" in e), None)
        if entry is None:
            return None
        ids, remembered = dict(entry.get("attribution") or {}), entry.get("attributedFrom")
    # Memory gives the tracking ids only: an email's hash is always the payment's own.
    ids["from"] = "memory" if remembered else "event"
    ids["attributedFrom"] = remembered
    return ids


def _attempts(ledger: Ledger, item_id: str, item: dict[str, str]) -> dict[str, Any]:
    """The attempts kept, those that never finished (their worker died, or could not record
    the outcome), and how many older ones were not kept."""
    kept = _entries(ledger, attempts_key(item_id))
    total = int(item_number(item, "attempts", 0)) if item else 0
    numbers = {e.get("attempt") for e in kept}
    full = len(kept) >= ATTEMPTS_KEPT
    first = min((n for n in numbers if isinstance(n, int)), default=total + 1) if full else 1
    running = bool(item.get("in_flight")) or item.get("status") != "dead"
    missing = [n for n in range(first, total + 1) if n not in numbers]
    if missing and running and missing[-1] == total:
        missing.pop()  # the attempt running now, or one a refund's gate ended (waiting…)
    unfinished = [{"attempt": n, "outcome": "never_finished"} for n in missing]
    attempts = sorted([*kept, *unfinished], key=lambda e: e.get("attempt") or 0)
    return {"attempts": attempts, "attemptsDropped": max(0, first - 1) if full else 0}


def _dead_letter(item: dict[str, str]) -> dict[str, Any] | None:
    if item.get("status") != "dead":
        return None
    return {
        "reason": item.get("reason") or None,
        "status": _number(item.get("last_status")),
        "error": item.get("last_error") or None,
        "at": _iso(item.get("dead_at")),
    }


def _refund(ledger: Ledger, item_id: str) -> dict[str, Any] | None:
    item = ledger.get(item_id)
    events = _entries(ledger, events_key(item_id))
    if item is None and not events:
        return None
    item = item or {}
    payload = _payload(item)
    return {
        "id": item_id,
        "state": STATES.get(item.get("status", ""), item.get("status") or "expired"),
        "reason": item.get("reason") or None,
        "amount": payload.get("amount") if payload else _number(item.get("requested")),
        "currency": item.get("currency") or None,
        "sent": payload or None,
        "events": events,
        **_attempts(ledger, item_id, {}),
        "deadLetter": _dead_letter(item),
    }


def _entries(ledger: Ledger, key: str) -> list[dict[str, Any]]:
    entries = []
    for raw in ledger.redis.lrange(key, 0, -1):  # type: ignore[union-attr]
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entry["at"] = _iso(entry.get("at"))
            entries.append(entry)
    return entries


def _members(ledger: Ledger, key: str) -> set[str]:
    members: set[bytes] = ledger.redis.smembers(key)  # type: ignore[assignment]
    return {m.decode() for m in members}


def _number(value: str | None) -> int | float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


def _iso(value: object) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return iso_millis(seconds)


def render(told: dict[str, Any]) -> str:
    """The story for a terminal: the payment, its events, attempts, delivery and refunds."""
    lines = [f"payment {told['externalId'] or told['id']}  {told['state']}"]
    if told["reason"]:
        lines.append(f"  why          {told['reason']}")
    conversion = told["conversion"]
    if conversion:
        lines.append(
            "  conversion   {conversionType} {amount} {currency} (minor units)".format(**conversion)
        )
    attribution = told["attribution"]
    if attribution:
        ids = [f"{k} {_short(k, v)}" for k, v in attribution.items() if k in ATTRIBUTION]
        source = attribution["attributedFrom"]
        source = f"remembered from {source}" if source else "from the event"
        shown = f"{', '.join(ids)} ({source})" if ids else "none"
        lines.append(f"  attribution  {shown}")
    if told["conversionId"]:
        lines.append(f"  delivered    {told['deliveredAt']}  conversionId {told['conversionId']}")
        if told["commissionId"] or told["commissionAmount"] is not None:
            lines.append(
                f"  commission   {told['commissionId'] or '-'}  amount {told['commissionAmount']}"
            )
    if told["nextAttemptAt"]:
        lines.append(f"  next attempt {told['nextAttemptAt']}")
    dead = told["deadLetter"]
    if dead:
        lines.append(
            f"  dead letter  {dead['reason']} since {dead['at']}  last status {dead['status']}"
        )
    lines += _events_text(told["events"], "  ")
    lines += _attempts_text(told, "  ")
    for refund in told["refunds"]:
        amount = "whole" if refund["amount"] is None else refund["amount"]
        lines.append(
            f"  refund {refund['id']}  {refund['state']}  {refund['reason'] or ''}  amount {amount}"
        )
        lines += _events_text(refund["events"], "    ")
        lines += _attempts_text(refund, "    ")
    return "\n".join(line.rstrip() for line in lines)


def _short(name: str, value: object) -> str:
    """An attribution id as a terminal shows it: an email's hash by its first 12 digits."""
    text = str(value)
    return text[:12] + "…" if name == "customerEmailHash" and len(text) > 12 else text


def _events_text(events: list[dict[str, Any]], indent: str) -> list[str]:
    lines = [f"{indent}events"] if events else []
    for e in events:
        what = [e.get("at"), e.get("provider"), e.get("eventId"), e.get("type"), e.get("outcome")]
        if e.get("ipnTrackId"):
            what.insert(3, f"ipn_track_id {e['ipnTrackId']}")
        if e.get("via") == "catchup":
            what.append("(catch-up)")
        if e.get("reason"):
            what.append(f"({e['reason']}{': ' + e['detail'] if e.get('detail') else ''})")
        lines.append(indent + "  " + "  ".join(str(w) for w in what if w))
    return lines


def _attempts_text(told: dict[str, Any], indent: str) -> list[str]:
    attempts = told["attempts"]
    if not attempts:
        return []
    lines = [f"{indent}attempts"]
    if told["attemptsDropped"]:
        lines.append(f"{indent}  ({told['attemptsDropped']} older attempts not kept)")
    for a in attempts:
        took = f"{a['ms']} ms" if "ms" in a else ""
        what = [f"#{a['attempt']}", a.get("at"), a.get("status"), a["outcome"], took]
        line = "  ".join(str(w) for w in what if w not in (None, ""))
        if a.get("error"):
            line += "  " + " ".join(str(a["error"]).split())[:120]
        lines.append(indent + "  " + line)
    return lines
