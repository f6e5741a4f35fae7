"""The ledger's Redis keys and how long they are kept (bridge/delivery/ledger.py)."""

from __future__ import annotations

import math

PREFIX = "rb:item:"
DUE = "rb:due"
DLQ = "rb:dlq"
RETRY = "rb:retry"
UNDELIVERED = "rb:undelivered"
REJECTED = "rb:rejected"
# "<lease end> <item key>" of the one suspect in flight (see lua/claim.lua).
SUSPECT = "rb:suspect"
# Suspects put back behind the one in flight, made due again when it frees the slot.
SUSPECTS_WAITING = "rb:suspects:waiting"
# Refunds held until their conversion is delivered (lua/refund_gate.lua).
REFUNDS_WAITING = "rb:refunds:waiting"
# Conversions delivered, by when (`refbridge verify`), kept as long as their items.
DELIVERED = "rb:delivered"
SEEN_TTL = 30 * 24 * 3600
KEEP_DONE = 30 * 24 * 3600
REJECTED_KEEP = 1000
# How long the seen marker of a message proved not genuine stays: long enough to answer a burst
# of replays without asking PayPal again, short enough that varied forgeries cannot pile up.
KEEP_INVALID = 3600


def item_key(item_id: str) -> str:
    """The Redis key of an item."""
    return PREFIX + item_id


def waiting_refunds_key(item_id: str) -> str:
    """The set of refunds waiting for conversion `item_id` to be delivered (refund_gate.lua)."""
    return f"rb:after:{item_id}"


def purged_key(item_id: str) -> str:
    """Marks conversion `item_id` as purged, never sent: its refunds are not sent either."""
    return f"rb:purged:{item_id}"


def item_id(key: str) -> str:
    """The id of an item from its Redis key."""
    return key[len(PREFIX) :]


def item_number(item: dict[str, str], field: str, default: float) -> float:
    """A numeric field of the item; `default` when it is missing or unreadable."""
    try:
        value = float(item[field])
    except (KeyError, ValueError):
        return default
    return value if math.isfinite(value) else default


def purge_keys(item: str) -> list[str]:
    """The keys lua/purge.lua touches for `item`."""
    return [item_key(item), DLQ, waiting_refunds_key(item), REFUNDS_WAITING, purged_key(item), DUE]


def pairs(flat: list[bytes]) -> dict[str, str]:
    """A flat Redis reply [field, value, ...] as text."""
    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else value
