"""What `refbridge status` and `refbridge dlq` show: read-only views of the ledger."""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.dispatch import QUEUE
from bridge.ledger import DLQ, DUE, RETRY, STATS, Ledger


def status(ledger: Ledger) -> dict[str, Any]:
    """Queue depth, scheduled retries, dead letters and the outcome counters."""
    r, now = ledger.redis, time.time()
    pipe = r.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.zcard(DUE)
    pipe.zcount(DUE, "-inf", now - 5)
    pipe.zcard(RETRY)
    pipe.zcard(DLQ)
    pipe.hgetall(STATS)
    pipe.zrange(DUE, 0, 999)
    queued, pending, overdue, retries, dead, stats, due_keys = pipe.execute()
    counters = {k.decode(): v.decode() for k, v in stats.items()}
    oldest = _oldest_created(ledger, due_keys)

    def number(name: str) -> int:
        return int(counters.get(name, 0))

    return {
        "queue_depth": queued,
        "pending": pending,
        "overdue": overdue,
        "scheduled_retries": retries,
        "dead_letter": dead,
        "delivered": number("delivered"),
        "rejected": number("rejected"),
        "unattributed": number("unattributed"),
        "ignored": number("ignored"),
        "duplicate": number("duplicate"),
        "accepted": number("accepted"),
        "retried": number("retried"),
        "dead_lettered": number("dead_lettered"),
        "oldest_pending_age_seconds": round(now - oldest, 1) if oldest else None,
        "last_delivered_at": _iso(counters.get("last_delivered_at")),
        "last_error": counters.get("last_error") or None,
        "last_error_at": _iso(counters.get("last_error_at")),
    }


def _oldest_created(ledger: Ledger, keys: list[bytes]) -> float | None:
    if not keys:
        return None
    pipe = ledger.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key.decode(), "created_at")
    created = [float(v) for v in pipe.execute() if v]
    return min(created) if created else None


def _iso(value: str | float | None) -> str | None:
    if not value:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(value)))


def dead_letter_entry(ledger: Ledger, entry_id: str) -> dict[str, Any] | None:
    """One dead-letter entry in full, or None when `entry_id` is not dead-lettered."""
    if ledger.redis.zscore(DLQ, "rb:item:" + entry_id) is None:
        return None
    item = ledger.get(entry_id) or {}
    return {
        "id": entry_id,
        "externalId": item.get("external_id"),
        "kind": item.get("kind"),
        "provider": item.get("provider"),
        "providerEventId": item.get("event_id"),
        "reason": item.get("reason"),
        "status": int(item["last_status"]) if item.get("last_status") else None,
        "response": item.get("last_error") or None,
        "attempts": int(item.get("attempts", 0)),
        "replays": int(item.get("replays", 0)),
        "firstAttemptAt": _iso(item.get("first_attempt_at")),
        "lastAttemptAt": _iso(item.get("last_attempt_at")),
        "deadLetteredAt": _iso(item.get("dead_at")),
        "payload": json.loads(item["payload"]) if item.get("payload") else None,
    }


def dead_letters(ledger: Ledger) -> list[dict[str, Any]]:
    """Every dead-letter entry, oldest first."""
    entries = (dead_letter_entry(ledger, i) for i in ledger.dead_letter_ids())
    return [e for e in entries if e is not None]
