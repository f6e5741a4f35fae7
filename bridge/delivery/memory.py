"""What the bridge remembers of each conversion it records, for the payments that come after it.

A renewal or a second purchase often carries no attribution id of its own; its subscription or
customer does, from the sale that brought them. So every recorded conversion leaves:
- its record: externalId, amount, currency and attribution ids (what a later refund of it needs
  too), found by its payment handles (intent, charge, invoice, PayPal transaction);
- when it named its affiliate itself, its customer handles (subscription, customer, payer)
  pointing at that record. A payment attributed from memory leaves them pointing where they
  were, so `attributedFrom` always names the sale that carried the ids.

Layout, chosen for size (BENCHMARKS.md, "Attribution memory"): an entry is one field of a small
Redis hash, never a key of its own (a key costs more than its data). Entries are spread over
BUCKETS hashes `rb:mem:<4 hex>` by an 8-byte digest of what they name (2 bytes pick the bucket,
6 are the field). Values stay within Redis's `hash-max-ziplist-value` (64), so every bucket
keeps its compact encoding; a longer record is several fields (chunks). A record lives at the
digest of its first payment handle (of its externalId when it has none), so that handle needs
no field of its own; every other handle's field holds its record's digest. The record's first
chunk starts with its day number by Redis's clock: recall.lua treats a record older than
ATTRIBUTION_MEMORY_DAYS as gone and stamps the one it uses anew (handles live as long as their
record); trim.lua, run by every worker's sweeper, deletes old records, their chunks and the
handles left pointing at nothing. Written by the intake's own enqueue script, in the round trip
that records the conversion (lua/enqueue.lua).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import redis

from bridge.conversion import Conversion
from bridge.delivery import scripts

PREFIX = "rb:mem:"
TRIM_CURSOR = "rb:mem-trim"
BUCKETS = 1 << 14
DEFAULT_DAYS = 400
# 63 bytes at most a value, within Redis's default hash-max-ziplist-value (64) and the
# ziplist's one-byte length header: a record's first chunk gives 2 of them to its day stamp.
_FIRST_CHUNK = 61
_CHUNK = 63
# 32 chunks, about 2 KB: an externalId (255) and three Stripe metadata values (500 each).
_MAX_CHUNKS = 32
# Handles a conversion is found by, of each sort: a few name any payment or customer.
_MAX_HANDLES = 4
_SEPARATOR = "\x1f"
# 2 bytes name the bucket, 6 the field in it: two handles meet in a field once in about 2^64/n²
# for n remembered (n = 10^7: once in 10^5 such stores), and a look-up of an unknown handle
# finds a stranger's field with odds of one in 2^48 per entry of its bucket.
_DIGEST = 8


@dataclass(frozen=True)
class Remembered:
    """A recorded conversion as memory keeps it."""

    external_id: str
    amount: int
    currency: str
    session_id: str | None
    click_id: str | None
    affiliate_code: str | None
    # False for a conversion recorded as unattributed: never sent, nor are its refunds.
    sent: bool = True


Entry = tuple[str, bytes, bytes]
"""(bucket key, field, value without its day stamp): one remembered field."""


@dataclass(frozen=True)
class Writes:
    """What recording a conversion writes: its record and payment pointers, and its customer
    pointers (which a duplicate writes only where there are none: lua/enqueue.lua)."""

    entries: list[Entry]
    customers: list[Entry]

    def args(self) -> list[str | bytes | int]:
        """As remember.lua's callers read them: the count of all, of the customer pointers,
        then each entry's triple, the customer pointers last."""
        found = self.entries + self.customers
        return [len(found), len(self.customers), *(part for entry in found for part in entry)]


NOTHING = Writes([], [])


def entries(conversion: Conversion, sent: bool = True) -> Writes:
    """What recording `conversion` leaves in memory (see the module's docstring); `sent` False
    for one never sent (unattributed), so that its refunds are not sent either."""
    payment = conversion.handles.payment[:_MAX_HANDLES]
    # The record lives where its first payment handle would point from (a refund names the
    # payment, so it finds it in one step, and that handle needs no field of its own); a
    # conversion without one lives under its externalId.
    if payment:
        record, payment = _digest("handle", payment[0]), payment[1:]
    else:
        record = _digest("record", conversion.external_id)
    text = _record_text(conversion, sent)
    rest = text[_FIRST_CHUNK:]
    chunks = [text[:_FIRST_CHUNK]] + [rest[i : i + _CHUNK] for i in range(0, len(rest), _CHUNK)]
    if len(chunks) > _MAX_CHUNKS:
        return NOTHING  # longer than every id RefCampaign and the providers allow, together
    bucket, field = _place(record)
    # The empty value after the last chunk deletes what a longer record may have left there.
    found = [(bucket, field + bytes([i]), chunk) for i, chunk in enumerate([*chunks, b""])]
    found += [(*_place(_digest("handle", h)), record) for h in payment]
    customers: list[Entry] = []
    if conversion.has_tracking_ids and conversion.attributed_from is None:
        handles = conversion.handles.customer[:_MAX_HANDLES]
        customers = [(*_place(_digest("handle", h)), record) for h in handles]
    return Writes(found, customers)


def asks_memory(conversion: Conversion) -> bool:
    """True when `conversion` names no affiliate itself but a customer memory may know."""
    return not conversion.has_tracking_ids and bool(conversion.handles.customer)


class Memory:
    """Recall and upkeep of what `entries` wrote, `days` the life of an unused entry."""

    def __init__(self, client: redis.Redis, days: int = DEFAULT_DAYS) -> None:
        self.redis = client
        self.days = days
        self._recall = client.register_script(scripts.RECALL)
        self._remember = client.register_script(scripts.REMEMBER_ONLY)
        self._remember_unsent = client.register_script(scripts.REMEMBER_UNSENT)
        self._trim = client.register_script(scripts.TRIM)

    def attribute(self, conversion: Conversion, refresh: bool = True) -> Conversion:
        """`conversion`, with the remembered ids of its subscription or customer when it names
        no affiliate itself; as it is otherwise (one Redis round trip only in that case).
        `refresh` False: read without stamping what it found (a dry run)."""
        if not asks_memory(conversion):
            return conversion
        handles = conversion.handles.customer
        while True:
            answer = self._find(handles, refresh)
            if answer is None:
                return conversion
            index, found = answer
            if found is not None and (found.session_id or found.click_id or found.affiliate_code):
                break
            handles = handles[index + 1 :]  # a record without ids names no affiliate: next
        return replace(
            conversion,
            session_id=found.session_id,
            click_id=found.click_id,
            affiliate_code=found.affiliate_code,
            attributed_from=found.external_id,
        )

    def recall(self, handles: Sequence[str], refresh: bool = True) -> Remembered | None:
        """The record the first of `handles` still remembered points to; refreshed by the use
        unless `refresh` is False (a dry run)."""
        answer = self._find(handles, refresh)
        return answer[1] if answer else None

    def _find(self, handles: Sequence[str], refresh: bool) -> tuple[int, Remembered | None] | None:
        """The index of the first handle remembered, and its record (None when unreadable)."""
        if not handles:
            return None
        args: list[str | bytes | int] = [PREFIX, BUCKETS, self.days, _FIRST_CHUNK, _CHUNK]
        args += ["1" if refresh else "0", *(_digest("handle", name) for name in handles)]
        answer = self._recall(args=args)
        return (int(answer[0]), _parse(answer[1])) if answer else None

    def remember(self, conversion: Conversion, sent: bool = True) -> None:
        """Remember `conversion` without recording it for delivery (a PayPal sign-up's ids;
        with `sent` False, an unattributed sale, so that its refunds are not sent: only where
        nothing is remembered of its payment yet, lua/remember_unsent.lua)."""
        script = self._remember if sent else self._remember_unsent
        script(args=entries(conversion, sent).args())

    def trim(self, buckets: int) -> int:
        """Delete the expired entries of the next `buckets` buckets; how many were deleted."""
        args: list[str | int] = [PREFIX, BUCKETS, self.days, buckets]
        return int(self._trim(keys=[TRIM_CURSOR], args=args))


def _digest(kind: str, name: str) -> bytes:
    return hashlib.blake2b(f"{kind}:{name}".encode(), digest_size=_DIGEST).digest()


def _place(digest: bytes) -> tuple[str, bytes]:
    """The bucket and field of a digest (recall.lua computes the same for a record)."""
    number = int.from_bytes(digest[:2], "big") % BUCKETS
    return f"{PREFIX}{number:04x}", digest[2:]


_NOT_SENT = "u"


def _record_text(conversion: Conversion, sent: bool = True) -> bytes:
    parts = (
        conversion.external_id,
        str(conversion.amount),
        conversion.currency,
        conversion.session_id or "",
        conversion.click_id or "",
        conversion.affiliate_code or "",
        "" if sent else _NOT_SENT,
    )
    # Empty ids at the end take no room: _parse reads them back as absent.
    text = _SEPARATOR.join(part.replace(_SEPARATOR, "") for part in parts)
    return text.rstrip(_SEPARATOR).encode()


def _parse(raw: bytes) -> Remembered | None:
    parts = raw.decode("utf-8", "replace").split(_SEPARATOR)
    parts += [""] * (7 - len(parts))
    if len(parts) != 7 or not parts[1].isdigit():
        return None
    external_id, amount, currency, session_id, click_id, affiliate_code, flags = parts
    return Remembered(
        external_id,
        int(amount),
        currency,
        session_id or None,
        click_id or None,
        affiliate_code or None,
        sent=flags != _NOT_SENT,
    )
