"""The durable ledger: every acknowledged message's state, due time and history, in Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from bridge import ledger_scripts
from bridge.dispatch import QUEUE, task_message
from bridge.metrics import STATS, latency_fields

PREFIX = "rb:item:"
DUE = "rb:due"
DLQ = "rb:dlq"
RETRY = "rb:retry"
UNDELIVERED = "rb:undelivered"
REJECTED = "rb:rejected"
SEEN_TTL = 30 * 24 * 3600
KEEP_DONE = 30 * 24 * 3600
REJECTED_KEEP = 1000


def item_key(item_id: str) -> str:
    """The Redis key of an item."""
    return PREFIX + item_id


def item_id(key: str) -> str:
    """The id of an item from its Redis key."""
    return key[len(PREFIX) :]


def new_token() -> str:
    """A fresh claim token."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Claim:
    """A leased item handed to a task: its id and the claim's token."""

    item_id: str
    token: str


class Ledger:
    """Atomic state changes of ledger items (see ledger_scripts for the model)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._enqueue = client.register_script(ledger_scripts.ENQUEUE)
        self._claim_due = client.register_script(ledger_scripts.CLAIM_DUE)
        self._start = client.register_script(ledger_scripts.START)
        self._finish = client.register_script(ledger_scripts.FINISH)
        self._replay = client.register_script(ledger_scripts.REPLAY)
        self._purge = client.register_script(ledger_scripts.PURGE)

    def enqueue(
        self,
        item: str,
        seen: str,
        fields: Mapping[str, str | int | float],
        lease: float,
        stats: tuple[str, str] = ("", ""),
    ) -> Claim | None:
        """Record a new item, leased for its first run; None when `seen` or the item exists.

        `stats` names the counters to add one to when it is recorded / a duplicate.
        """
        now = time.time()
        token = new_token()
        argv: list[Any] = [now, now + lease, token, SEEN_TTL, *stats, task_message(item, token)]
        for name, value in fields.items():
            argv += [name, value]
        keys = [item_key(item), DUE, seen, STATS, UNDELIVERED, QUEUE]
        created = self._enqueue(keys=keys, args=argv)
        return Claim(item, token) if created else None

    def dispatch_due(self, lease: float, limit: int = 100) -> list[Claim]:
        """Lease up to `limit` items whose due time has come and queue a task for each."""
        now = time.time()
        flat = self._claim_due(keys=[DUE], args=[now, now + lease, new_token(), limit])
        claims = [
            Claim(item_id(_text(k)), _text(t)) for k, t in zip(flat[::2], flat[1::2], strict=True)
        ]
        if claims:
            # Not atomic with the claim, and need not be: a lost message is claimed again.
            self.redis.lpush(QUEUE, *(task_message(c.item_id, c.token) for c in claims))
        return claims

    def start(self, claim: Claim, lease: float) -> dict[str, str] | None:
        """Begin an attempt under `claim`; the item's fields, or None for a stale claim."""
        now = time.time()
        flat = self._start(
            keys=[item_key(claim.item_id), DUE, RETRY], args=[claim.token, now, now + lease]
        )
        if not flat:
            return None
        return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}

    def finish(
        self,
        claim: Claim,
        outcome: str,
        when: float,
        stat: str = "",
        fields: Mapping[str, str | int | float] | None = None,
    ) -> bool:
        """Apply an attempt's outcome ('retry' | 'done' | 'dead'); False if it no longer applies."""
        argv: list[Any] = [claim.token, time.time(), outcome, when, stat]
        for name, value in (fields or {}).items():
            argv += [name, value]
        keys = [item_key(claim.item_id), DUE, DLQ, STATS, RETRY, UNDELIVERED]
        return bool(self._finish(keys=keys, args=argv))

    def replay(self, ids: Iterable[str]) -> list[str]:
        """Put dead-lettered items back to work, due now; the ids that were dead-lettered."""
        now = time.time()
        keys = (DUE, DLQ, UNDELIVERED)
        return [i for i in ids if self._replay(keys=[item_key(i), *keys], args=[now])]

    def purge(self, ids: Iterable[str]) -> list[str]:
        """Delete dead-lettered items; the ids that were deleted."""
        return [i for i in ids if self._purge(keys=[item_key(i), DLQ])]

    def count(self, *stats: str) -> None:
        """Add one to each counter named (see bridge.metrics.stat)."""
        pipe = self.redis.pipeline(transaction=False)
        for stat in stats:
            pipe.hincrby(STATS, stat, 1)
        pipe.execute()

    def observe_latency(self, seconds: float) -> None:
        """Add one delivery latency to the histogram."""
        bucket, total, count = latency_fields(seconds)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(STATS, bucket, 1)
        pipe.hincrbyfloat(STATS, total, seconds)
        pipe.hincrby(STATS, count, 1)
        pipe.execute()

    def note(self, **latest: str | float) -> None:
        """Remember the latest values of something (last delivery, last error) for status."""
        self.redis.hset(STATS, mapping=latest)

    def record_rejected(self, entry: str) -> None:
        """Keep a bounded list of recent rejections (JSON lines) for `refbridge status`."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(REJECTED, entry)
        pipe.ltrim(REJECTED, 0, REJECTED_KEEP - 1)
        pipe.execute()

    def get(self, item: str) -> dict[str, str] | None:
        """All fields of one item."""
        raw: dict[bytes, bytes] = self.redis.hgetall(item_key(item))  # type: ignore[assignment]
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    def dead_letter_ids(self) -> list[str]:
        """Ids in the dead-letter queue, oldest first."""
        keys: list[bytes] = self.redis.zrange(DLQ, 0, -1)  # type: ignore[assignment]
        return [item_id(_text(k)) for k in keys]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
