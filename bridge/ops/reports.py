"""What `refbridge status` and `refbridge dlq` show: read-only views of the ledger."""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.catchup.run import last_runs
from bridge.delivery.intake import PAYPAL_WEBHOOK
from bridge.delivery.keys import DLQ, DUE, REFUNDS_WAITING, RETRY, UNDELIVERED, item_key
from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import QUEUE
from bridge.delivery.stats import STATS, WEBHOOK_VERIFICATIONS, parse_stat, totals
from bridge.ops.heartbeat import SEEN_WITHIN, WORKERS
from bridge.redis_client import redis_time

# The counters of attempts: postbacks, IPN verifications, PayPal REST event verifications,
# refunds.
ATTEMPT_COUNTERS = ("postbacks", "verifications", WEBHOOK_VERIFICATIONS, "refunds")
# Due this long ago and still not claimed: no worker is sweeping.
OVERDUE_AFTER = 5.0


def _snapshot(ledger: Ledger) -> tuple[dict[str, str], dict[str, float | None]]:
    r = ledger.redis
    now = redis_time(r)  # due times and ages by Redis's clock, as the ledger keeps them
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(STATS)
    pipe.llen(QUEUE)
    pipe.zcount(DUE, "-inf", now)
    pipe.zcard(DUE)
    pipe.zcount(DUE, "-inf", now - OVERDUE_AFTER)
    pipe.zcard(RETRY)
    pipe.zcard(DLQ)
    pipe.zrange(UNDELIVERED, 0, 0, withscores=True)
    pipe.scard(REFUNDS_WAITING)
    pipe.zcount(WORKERS, now - SEEN_WITHIN, "+inf")
    stats, tasks, due, pending, overdue, retries, dead, oldest, waiting, workers = pipe.execute()
    counters = {k.decode(): v.decode() for k, v in stats.items()}
    gauges: dict[str, float | None] = {
        "queue_depth": tasks + due,
        "pending": pending,
        "overdue": overdue,
        "scheduled_retries": retries,
        "dead_letter": dead,
        "oldest_undelivered_age_seconds": round(now - oldest[0][1], 1) if oldest else None,
        "refunds_waiting": waiting,
        "workers": workers,
    }
    return counters, gauges


GAUGE_DOCS = {
    "queue_depth": "Delivery tasks waiting in Celery's queue, and items due that no task took yet",
    "pending": "Conversions and IPN messages not yet delivered, verified or dead-lettered",
    "overdue": "Items due for more than 5 s that no worker's sweeper has published",
    "scheduled_retries": "Items waiting for a scheduled retry",
    "dead_letter": "Entries in the dead-letter queue",
    "oldest_undelivered_age_seconds": "Age of the oldest item not yet delivered",
    "refunds_waiting": "Refunds held until their conversion is delivered",
    "workers": f"Celery workers whose heartbeat was seen in the last {SEEN_WITHIN:g} s",
}


def metrics_state(ledger: Ledger) -> tuple[dict[str, str], dict[str, tuple[str, float]]]:
    """Counters and gauges for the Prometheus collector."""
    counters, gauges = _snapshot(ledger)
    return counters, {k: (GAUGE_DOCS[k], v or 0.0) for k, v in gauges.items()}


def status(ledger: Ledger) -> dict[str, Any]:
    """Queue depth, scheduled retries, dead letters and the outcome counters."""
    counters, gauges = _snapshot(ledger)
    sums = totals(counters)
    return {
        **gauges,
        "delivered": sums.get("postbacks.delivered", 0),
        "rejected": sums.get("webhooks.rejected", 0),
        "unattributed": sums.get("webhooks.unattributed", 0),
        "ignored": sums.get("webhooks.ignored", 0),
        "duplicate": sums.get("webhooks.duplicate", 0),
        "accepted": sums.get("webhooks.accepted", 0),
        "retried": _across(sums, "retried"),
        "crashed": _across(sums, "crashed"),
        "worker_died": _across(sums, "worker_died"),
        "dead_lettered": _across(sums, "dead_lettered"),
        "limit_exceeded": _across(sums, "limit_exceeded"),
        **_paypal_webhooks(counters, sums),
        "refunds": {
            "sent": sums.get("refunds.sent", 0),
            "already_refunded": sums.get("refunds.already_refunded", 0),
            "waiting": gauges["refunds_waiting"],
            "unknown_payment": sums.get("refunds.unknown_payment", 0),
            "not_sent": sums.get("refunds.not_sent", 0),
            "retried": sums.get("refunds.retried", 0),
            "dead_lettered": sums.get("refunds.dead_lettered", 0),
        },
        "consumer_stuck": sums.get("worker.consumer_stuck", 0),
        "last_delivered_at": _iso(counters.get("last_delivered_at")),
        "last_error": counters.get("last_error") or None,
        "last_error_at": _iso(counters.get("last_error_at")),
        "catchup": {
            provider: {
                "last_run_at": _iso(run.get("finishedAt")),
                "recovered": run.get("newlyRecorded", 0),
                "seen": run.get("seen", 0),
                "duration_seconds": run.get("durationSeconds"),
                "trigger": run.get("trigger"),
                "error": run.get("error"),
            }
            for provider, run in sorted(last_runs(counters).items())
        },
    }


def _paypal_webhooks(counters: dict[str, str], sums: dict[str, int]) -> dict[str, int]:
    """The PayPal REST webhook path: its verification outcomes and its rejections."""
    shown = {
        f"paypal_webhook_{outcome}": sums.get(f"{WEBHOOK_VERIFICATIONS}.{outcome}", 0)
        for outcome in ("verified", "failure", "retried", "dead_lettered")
    }
    rejected = 0
    for field, value in counters.items():
        name, labels = parse_stat(field)
        if name == "webhooks" and labels.get("provider") == PAYPAL_WEBHOOK:
            rejected += int(float(value)) if labels.get("outcome") == "rejected" else 0
    return {**shown, "paypal_webhook_rejected": rejected}


def _across(sums: dict[str, int], outcome: str) -> int:
    """An attempt outcome summed over postbacks and both kinds of PayPal verification."""
    return sum(sums.get(f"{name}.{outcome}", 0) for name in ATTEMPT_COUNTERS)


def _iso(value: str | float | None) -> str | None:
    if not value:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(value)))


def dead_letter_entry(ledger: Ledger, entry_id: str) -> dict[str, Any] | None:
    """One dead-letter entry in full, or None when `entry_id` is not dead-lettered."""
    if ledger.redis.zscore(DLQ, item_key(entry_id)) is None:
        return None
    item = ledger.get(entry_id) or {}
    return {
        "id": entry_id,
        "externalId": item.get("external_id") or None,  # a refund's, once its sale is known
        "kind": item.get("kind"),
        "provider": item.get("provider"),
        "providerEventId": item.get("event_id"),
        "reason": item.get("reason"),
        "status": int(item["last_status"]) if item.get("last_status") else None,
        "response": item.get("last_error") or None,
        "attempts": int(item.get("attempts", 0)),
        "replays": int(item.get("replays", 0)),
        "deaths": int(item.get("deaths", 0)),
        "firstAttemptAt": _iso(item.get("first_attempt_at")),
        "lastAttemptAt": _iso(item.get("last_attempt_at")),
        "deadLetteredAt": _iso(item.get("dead_at")),
        "payload": _payload(item.get("payload")),
    }


def _payload(text: str | None) -> Any:
    """The stored payload as JSON; a payload that is not JSON (a corrupt item) as its text."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def dead_letters(ledger: Ledger) -> list[dict[str, Any]]:
    """Every dead-letter entry, oldest first."""
    entries = (dead_letter_entry(ledger, i) for i in ledger.dead_letter_ids())
    return [e for e in entries if e is not None]
