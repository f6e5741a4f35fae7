"""The story of each payment, for `refbridge show`: each message that named it and what it came
to, each attempt at its postback and its refunds, found by any id a person has in hand.

A story is named by its conversion's externalId; a refund's by its ledger item id (until the
refund is matched to its conversion, which then lists it); a message that maps to nothing by
the payment it names (a Stripe object's id, a PayPal txn_id or resource id), else its event id.
Everything is kept STORY_TTL seconds (the dedup window) from its last write, and bounded:
- `rb:events:<story>`: a list of JSON entries, one per message received (webhook, IPN, or
  catch-up), the latest EVENTS_KEPT; written by lua/enqueue.lua in the round trip that
  records the conversion, or here for one that is not recorded (ignored, unattributed);
- `rb:attempts:<item>`: a list of JSON entries, one per finished postback attempt, the latest
  ATTEMPTS_KEPT; written by lua/finish.lua with the attempt's outcome. Each names its attempt's
  number, so the attempts no longer kept (and those a dying worker never finished) show;
- `rb:id:<id>`: the story an id belongs to (a payment intent, charge, invoice, PayPal txn_id,
  ipn_track_id, an ignored event's id); a recorded message's event id needs none: its seen
  marker (`rb:seen:<provider>:<event id>`) holds the story's name;
- `rb:refunds-of:<externalId>`: the refund items matched to a conversion.

Only messages that passed verification are written: an unauthenticated request leaves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from bridge import json_text
from bridge.conversion import Conversion
from bridge.delivery.stats import STATS

STORY_TTL = 30 * 24 * 3600
EVENTS_KEPT = 50
ATTEMPTS_KEPT = 20
# Longer ids are no provider's (bridge.conversion.MAX_HANDLE_ID_LENGTH).
_MAX_ID = 255
ATTRIBUTION = ("sessionId", "clickId", "affiliateCode", "customerEmailHash")


def events_key(story: str) -> str:
    """The list of messages received for `story`."""
    return f"rb:events:{story}"


def attempts_key(item: str) -> str:
    """The list of finished postback attempts at ledger item `item`."""
    return f"rb:attempts:{item}"


def id_key(any_id: str) -> str:
    """Where the story that `any_id` belongs to is named."""
    return f"rb:id:{any_id}"


def refunds_key(external_id: str) -> str:
    """The refund items matched to conversion `external_id`."""
    return f"rb:refunds-of:{external_id}"


@dataclass(frozen=True)
class Told:
    """What recording one message adds to its story: the entry (JSON, its `outcome` left for
    the recording to add), the ids it is found by, and whether a duplicate is told too (a
    webhook resent: yes; catch-up reading an event again: no)."""

    entry: str
    aliases: tuple[str, ...] = ()
    duplicates: bool = True

    def args(self) -> list[str | int]:
        """lua/enqueue.lua's story arguments: the entry, whether a duplicate is told, how many
        entries are kept."""
        return [self.entry, "1" if self.duplicates else "", EVENTS_KEPT]

    def keys(self, item: str) -> list[str]:
        """lua/enqueue.lua's story keys for ledger item `item`: its events, its ids."""
        return [events_key(item), *(id_key(alias) for alias in self.aliases)]


# What an item that tells no story passes lua/enqueue.lua (a raw PayPal message, unverified).
NOT_TOLD = Told("")


def event_entry(
    provider: str,
    event_id: str,
    event_type: str,
    received_at: float,
    *,
    via: str = "webhook",
    **more: Any,
) -> dict[str, Any]:
    """One message received: when, from whom, which event; `more` says what it came to."""
    entry: dict[str, Any] = {
        "at": round(received_at, 3),
        "provider": provider,
        "eventId": event_id or None,
        "type": event_type or None,
        "via": via,
    }
    entry.update({k: v for k, v in more.items() if v not in (None, "")})
    return entry


def conversion_told(
    conversion: Conversion, provider: str, event_id: str, received_at: float, via: str
) -> Told:
    """The story entry of a conversion being recorded, and the ids it is found by. What it
    maps to is its ledger item's (`conversion_entry` adds it where there is no item)."""
    entry = event_entry(
        provider,
        event_id,
        event_type(conversion),
        received_at,
        via=via,
        ipnTrackId=conversion.metadata.get("ipnTrackId"),
    )
    return Told(json_text.dumps(entry), aliases_of(conversion, event_id), via != "catchup")


def conversion_entry(conversion: Conversion, told: Told, outcome: str) -> dict[str, Any]:
    """The whole entry of a conversion that is not recorded (unattributed): what it maps to,
    and the attribution it found."""
    payload = conversion.to_payload()
    entry: dict[str, Any] = json.loads(told.entry)
    entry.update(
        outcome=outcome,
        externalId=conversion.external_id,
        conversionType=conversion.conversion_type,
        amount=conversion.amount,
        currency=conversion.currency,
        attribution={k: payload[k] for k in ATTRIBUTION if k in payload},
    )
    return entry


def event_type(conversion: Conversion) -> str:
    """The provider's name for the event a conversion came from (Stripe's and PayPal REST's
    `eventType`, an IPN's `txn_type`)."""
    metadata = conversion.metadata
    found = metadata.get("eventType") or metadata.get("txnType") or ""
    return found if isinstance(found, str) else ""


def aliases_of(conversion: Conversion, event_id: str) -> tuple[str, ...]:
    """The ids a conversion's story is found by besides its externalId and its event id (whose
    seen marker names the story: lua/enqueue.lua): the IPN's track id, and its payment handles
    (intent, charge, invoice, PayPal transaction)."""
    metadata = conversion.metadata
    found = [metadata.get("eventId"), metadata.get("ipnTrackId")]
    found += [h.split(":", 2)[-1] for h in conversion.handles.payment]
    return _ids(found, exclude=conversion.external_id, also=event_id)


def _ids(found: Iterable[object], exclude: str = "", also: str = "") -> tuple[str, ...]:
    ids = (i.strip() for i in found if isinstance(i, str))
    kept = (i for i in ids if i and i not in (exclude, also) and len(i) <= _MAX_ID)
    return tuple(dict.fromkeys(kept))


def attempt_entry(
    number: int,
    started: float,
    outcome: str,
    status: int | None,
    error: str | None = None,
    took: float | None = None,
) -> str:
    """One finished postback attempt: its number, when it began, what it came to."""
    entry: dict[str, Any] = {"attempt": number, "at": round(started, 3), "outcome": outcome}
    entry["status"] = status
    if error:
        entry["error"] = error[:200]
    if took is not None:
        entry["ms"] = round(took * 1000)
    return json_text.dumps(entry)


def tell(
    client: redis.Redis,
    story: str,
    entry: Mapping[str, Any],
    aliases: Iterable[str] = (),
    *,
    replace_aliases: bool = True,
    counters: Iterable[str] = (),
) -> None:
    """Add `entry` to the story `story` (a message that records nothing in the ledger: ignored,
    unattributed, rejected); each of `aliases` then names it (`replace_aliases` False: only an
    alias that names no story yet). `counters` (bridge.delivery.stats) get one more each, in
    the same round trip."""
    pipe = client.pipeline(transaction=False)
    for counter in counters:
        pipe.hincrby(STATS, counter, 1)
    if not story or len(story) > _MAX_ID:
        pipe.execute()
        return
    key = events_key(story)
    pipe.rpush(key, json_text.dumps(dict(entry)))
    pipe.ltrim(key, -EVENTS_KEPT, -1)
    pipe.expire(key, STORY_TTL)
    for alias in _ids(aliases, exclude=story):
        pipe.set(id_key(alias), story, ex=STORY_TTL, nx=not replace_aliases)
    pipe.execute()


def link_refund(client: redis.Redis, external_id: str, refund_item: str) -> None:
    """List refund `refund_item` in the story of conversion `external_id`."""
    pipe = client.pipeline(transaction=False)
    pipe.sadd(refunds_key(external_id), refund_item)
    pipe.expire(refunds_key(external_id), STORY_TTL)
    pipe.execute()
