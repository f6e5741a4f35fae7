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
_MAX_CHUNKS = 16
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


Entry = tuple[str, bytes, bytes]
"""(bucket key, field, value without its day stamp): one remembered field."""


def entries(conversion: Conversion) -> list[Entry]:
    """What recording `conversion` leaves in memory (see the module's docstring)."""
    payment = conversion.handles.payment
    # The record lives where its first payment handle would point from (a refund names the
    # payment, so it finds it in one step, and that handle needs no field of its own); a
    # conversion without one lives under its externalId.
    if payment:
        record, payment = _digest("handle", payment[0]), payment[1:]
    else:
        record = _digest("record", conversion.external_id)
    text = _record_text(conversion)
    rest = text[_FIRST_CHUNK:]
    chunks = [text[:_FIRST_CHUNK]] + [rest[i : i + _CHUNK] for i in range(0, len(rest), _CHUNK)]
    if len(chunks) > _MAX_CHUNKS:
        return []  # ids hundreds of characters long: nothing any provider or RefCampaign issues
    bucket, field = _place(record)
    # The empty value after the last chunk deletes what a longer record may have left there.
    found = [(bucket, field + bytes([i]), chunk) for i, chunk in enumerate([*chunks, b""])]
    handles = payment
    if conversion.has_tracking_ids and conversion.attributed_from is None:
        handles += conversion.handles.customer
    found += [(*_place(_digest("handle", h)), record) for h in handles]
    return found


def asks_memory(conversion: Conversion) -> bool:
    """True when `conversion` names no affiliate itself but a customer memory may know."""
    return not conversion.has_tracking_ids and bool(conversion.handles.customer)


def flat(found: Sequence[Entry]) -> list[str | bytes]:
    """Entries as the arguments remember.lua reads."""
    return [part for entry in found for part in entry]


class Memory:
    """Recall and upkeep of what `entries` wrote, `days` the life of an unused entry."""

    def __init__(self, client: redis.Redis, days: int = DEFAULT_DAYS) -> None:
        self.redis = client
        self.days = days
        self._recall = client.register_script(scripts.RECALL)
        self._remember = client.register_script(scripts.REMEMBER_ONLY)
        self._trim = client.register_script(scripts.TRIM)

    def attribute(self, conversion: Conversion) -> Conversion:
        """`conversion`, with the remembered ids of its subscription or customer when it names
        no affiliate itself; as it is otherwise (one Redis round trip only in that case)."""
        if not asks_memory(conversion):
            return conversion
        found = self.recall(conversion.handles.customer)
        if found is None:
            return conversion
        return replace(
            conversion,
            session_id=found.session_id,
            click_id=found.click_id,
            affiliate_code=found.affiliate_code,
            attributed_from=found.external_id,
        )

    def recall(self, handles: Sequence[str]) -> Remembered | None:
        """The record the first of `handles` still remembered points to, refreshed by the use."""
        args: list[str | bytes | int] = [PREFIX, BUCKETS, self.days, _FIRST_CHUNK, _CHUNK]
        args += [_digest("handle", name) for name in handles]
        answer = self._recall(args=args)
        return _parse(answer[1]) if answer else None

    def remember(self, conversion: Conversion) -> None:
        """Remember `conversion` without recording it for delivery (a PayPal sign-up's ids)."""
        found = entries(conversion)
        args: list[str | bytes | int] = [len(found), *flat(found)]
        self._remember(args=args)

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


def _record_text(conversion: Conversion) -> bytes:
    parts = (
        conversion.external_id,
        str(conversion.amount),
        conversion.currency,
        conversion.session_id or "",
        conversion.click_id or "",
        conversion.affiliate_code or "",
    )
    # Empty ids at the end take no room: _parse reads them back as absent.
    text = _SEPARATOR.join(part.replace(_SEPARATOR, "") for part in parts)
    return text.rstrip(_SEPARATOR).encode()


def _parse(raw: bytes) -> Remembered | None:
    parts = raw.decode("utf-8", "replace").split(_SEPARATOR)
    parts += [""] * (6 - len(parts))
    if len(parts) != 6 or not parts[1].isdigit():
        return None
    external_id, amount, currency, session_id, click_id, affiliate_code = parts
    return Remembered(
        external_id,
        int(amount),
        currency,
        session_id or None,
        click_id or None,
        affiliate_code or None,
    )
