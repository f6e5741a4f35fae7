"""One attempt at a ledger item: deliver a conversion, or verify a PayPal message (an IPN or a
REST webhook event) and map it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import structlog

from bridge.conversion import iso_millis
from bridge.delivery import intake, paypal_api, refunds, story, verified
from bridge.delivery.http_client import post_conversion, post_refund, verify_ipn
from bridge.delivery.keys import item_number
from bridge.delivery.ledger import WORKER_DIED, Claim, Claimed, Ledger
from bridge.delivery.outcomes import (
    Crashed,
    DeadLetter,
    Delivered,
    Invalid,
    Outcome,
    RetryLater,
    Verified,
    backoff_delay,
    log_error,
)
from bridge.delivery.stats import WEBHOOK_VERIFICATIONS, stat
from config import Settings

log = structlog.get_logger("refbridge.worker")


def run_lease(settings: Settings) -> float:
    """How long one attempt may hold an item before it is presumed dead and claimed again."""
    return 2 * settings.delivery_timeout + 10


# Seconds of a lease kept free for recording an attempt's outcome after its last HTTP call.
LEASE_MARGIN = 5.0


@dataclass(frozen=True)
class Worker:
    """What attempts need: the ledger, the HTTP session, settings, a thread pool and the
    process's PayPal API token."""

    ledger: Ledger
    session: requests.Session
    settings: Settings
    threads: ThreadPoolExecutor
    paypal_tokens: paypal_api.TokenCache = field(default_factory=paypal_api.TokenCache)


# Items holding a raw provider message that a worker verifies before anything is delivered.
RAW_KINDS = ("ipn", intake.PAYPAL_WEBHOOK)
REFUND = "refund"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
MAX_RETRY_AFTER = 7 * 86400.0


def attempt(worker: Worker, item_ids: Sequence[str]) -> dict[str, str]:
    """Claim the items `item_ids` and run an attempt at each, concurrently (a task names at
    most BATCH); a word per item: what its attempt did, or why it was not attempted."""
    claimed = worker.ledger.claim(item_ids, run_lease(worker.settings))
    log_deaths(claimed)
    words = dict(claimed.words)
    ran = worker.threads.map(lambda claim: process_item(worker, claim), claimed.claims)
    words.update(zip((c.item_id for c in claimed.claims), ran, strict=True))
    return {i: words[i] for i in item_ids if i in words}


def log_deaths(claimed: Claimed) -> None:
    """One `worker_died` line per item whose previous attempt never finished: a suspect now
    attempted alone (`counted` when it died alone before), or dead-lettered at its last death."""
    for claim in [*claimed.claims, *claimed.dead]:
        if not claim.died_in:
            continue
        item = claim.item
        dead = not claim.token
        (log.error if dead else log.warning)(
            WORKER_DIED,
            item=claim.item_id,
            externalId=item.get("external_id"),
            provider_event_id=item.get("event_id"),
            attempt=int(item_number(item, "attempts", 0)),
            deaths=int(item_number(item, "deaths", 0)),
            counted=claim.died_in == "alone",
            outcome="dead_lettered" if dead else "attempted_alone",
        )


def process_item(worker: Worker, claim: Claim) -> str:
    """Run one attempt under `claim`; a short word for what happened."""
    item = claim.item
    bound = log.bind(
        item=claim.item_id,
        attempt=int(item_number(item, "attempts", 1)),
        provider_event_id=item.get("event_id"),
    )
    raw = item.get("kind") in RAW_KINDS
    if not raw:
        bound = bound.bind(externalId=item.get("external_id") or None)
    if item.get("kind") == REFUND:
        bound = bound.bind(kind=REFUND)
    try:
        outcome = _verify(worker, claim) if raw else _deliver(worker, claim)
    except Exception as exc:  # noqa: BLE001 — one item's failure must not stop its batch
        bound.exception("attempt_crashed")
        # The exception's type only: its message may quote the item.
        outcome = Crashed(f"attempt crashed: {type(exc).__name__}")
    if isinstance(outcome, str):  # a refund that waits for its sale, or is not sent: applied
        bound.info("attempt_finished", outcome=outcome)
        return outcome
    notes: dict[str, str | float] = {}
    try:
        word = _record(worker, claim, item, outcome, notes)
    except Exception:  # noqa: BLE001 — Redis down, most likely
        # Never turned into a failure (a postback may have been accepted): the claim's lease
        # runs out and the item is tried again.
        bound.exception("attempt_not_recorded")
        word = "unrecorded"
    bound.info("attempt_finished", outcome=word, status=getattr(outcome, "status", None), **notes)
    return word


def _deliver(worker: Worker, claim: Claim) -> Outcome | str:
    """POST a conversion; or a refund, once it knows its sale and that sale was delivered
    (else a word for what it did instead: bridge/delivery/refunds.py)."""
    if claim.item.get("kind") == REFUND:
        # Decided early enough that its POST (DELIVERY_TIMEOUT) still ends inside the lease.
        until = claim.at + run_lease(worker.settings) - LEASE_MARGIN
        until -= worker.settings.delivery_timeout
        prepared = refunds.prepare(worker.ledger, worker.settings, claim, until)
        if not isinstance(prepared, refunds.Send):
            return prepared
        return post_refund(worker.session, worker.settings, prepared.payload)
    return post_conversion(worker.session, worker.settings, json.loads(claim.item["payload"]))


def _verify(worker: Worker, claim: Claim) -> Outcome:
    item = claim.item
    raw = base64.b64decode(item["raw"])
    if item.get("kind") == intake.PAYPAL_WEBHOOK:
        headers = json.loads(item["headers"])
        return paypal_api.verify_event(_paypal(worker, claim), raw, headers)
    return verify_ipn(worker.session, worker.settings, raw)


def _paypal(worker: Worker, claim: Claim) -> paypal_api.Api:
    """PayPal's API for an attempt under `claim`, done before its lease runs out."""
    # The lease counts by Redis's clock and this by the host's: only its length is shared,
    # from when the claim came back. A margin keeps the attempt's finish inside the lease.
    until = claim.at + run_lease(worker.settings) - LEASE_MARGIN
    return paypal_api.Api(worker.session, worker.settings, worker.paypal_tokens, until)


def _record(
    worker: Worker,
    claim: Claim,
    item: dict[str, str],
    outcome: Outcome,
    notes: dict[str, str | float],
) -> str:
    """Apply `outcome` to the ledger; a short word for it. `notes` gets what the attempt's log
    line should add (a retry's error, delay and next attempt time)."""
    ledger, now = worker.ledger, time.time()
    if isinstance(outcome, Crashed):
        # No answer came: the last HTTP status stays the last one there was.
        return _retry(worker, claim, item, outcome, {"last_attempt_at": now}, notes)
    attempt = {"last_attempt_at": now, "last_status": getattr(outcome, "status", "") or ""}
    if isinstance(outcome, Delivered):
        fields = {
            **attempt,
            "status": "delivered",
            "delivered_at": now,
            "conversion_id": outcome.conversion_id or "",
            "commission_id": outcome.commission_id or "",
            "commission_amount": _or_blank(outcome.commission_amount),
            "last_error": "",
        }
        if item.get("kind") == REFUND:
            fields["already_refunded"] = "1" if outcome.already else ""
            counted = "already_refunded" if outcome.already else "sent"
            told = _told(claim, counted, outcome.status)
            done = ledger.mark_done(claim, fields, stat(refunds.REFUNDS, outcome=counted), told)
            return _applied(done, "already_refunded" if outcome.already else "refunded")
        latency = now - item_number(item, "received_at", now)
        ledger.mark_delivered(claim, fields, latency, _told(claim, "delivered", outcome.status))
        return "delivered"
    if isinstance(outcome, Verified):
        ledger.count(_stat_for(item, "verified"))
        if item.get("kind") == intake.PAYPAL_WEBHOOK:
            api = _paypal(worker, claim)
            word = verified.after_event(ledger, worker.settings, claim, item, api)
            if isinstance(word, RetryLater):  # the order's look-up failed for now
                attempt = {"last_attempt_at": time.time(), "last_status": word.status or ""}
                return _retry(worker, claim, item, word, attempt, notes)
            return word
        return verified.after_ipn(ledger, worker.settings, claim, item)
    if isinstance(outcome, Invalid):
        webhook = item.get("kind") == intake.PAYPAL_WEBHOOK
        ledger.count(_stat_for(item, "failure" if webhook else "invalid"))
        verified.drop_forgery(ledger, claim, item)
        return "rejected"
    if isinstance(outcome, DeadLetter):
        fields = {**attempt, "reason": outcome.reason, "last_error": outcome.error}
        error = f"{outcome.status} {outcome.reason}"
        dead = _stat_for(item, "dead_lettered", outcome.reason)
        told = _told(claim, "dead_lettered", outcome.status, outcome.error)
        return _applied(ledger.dead_letter(claim, dead, fields, error, told), "dead_lettered")
    return _retry(worker, claim, item, outcome, attempt, notes)


def _told(claim: Claim, word: str, status: int | None, error: str = "") -> str:
    """The story entry of a postback attempt under `claim` (bridge/delivery/story.py); none for
    the verification of a PayPal message, which is no attempt at the payment's postback."""
    item = claim.item
    if item.get("kind") in RAW_KINDS:
        return ""
    number = int(item_number(item, "attempts", 1))
    started = item_number(item, "last_attempt_at", claim.at)
    return story.attempt_entry(number, started, word, status, error, time.time() - claim.at)


def _or_blank(value: int | float | None) -> int | float | str:
    return "" if value is None else value


def _stat_for(item: dict[str, str], outcome: str, reason: str = "") -> str:
    """The counter of an attempt's outcome: postbacks for conversions, verifications for IPNs
    and PayPal REST events."""
    if item.get("kind") == "ipn":
        return stat("verifications", outcome=outcome)
    if item.get("kind") == intake.PAYPAL_WEBHOOK:
        return stat(WEBHOOK_VERIFICATIONS, outcome=outcome)
    if item.get("kind") == REFUND:
        return stat(refunds.REFUNDS, outcome=outcome, reason=reason)
    return stat("postbacks", outcome=outcome, reason=reason)


def _retry(
    worker: Worker,
    claim: Claim,
    item: dict[str, str],
    outcome: RetryLater | Crashed,
    attempt: dict[str, str | float],
    notes: dict[str, str | float],
) -> str:
    """Schedule the next attempt, or dead-letter once past the window (reason `crashed` when
    the attempt raised, else `exhausted`); "stale" when the claim no longer holds the item."""
    settings = worker.settings
    # Redis's clock, as the window's start is: the claim's time there (claim.lua stamps
    # `last_attempt_at`) plus what has passed here since, so a host's skew cancels out.
    now = item_number(item, "last_attempt_at", claim.at) + (time.time() - claim.at)
    crashed = isinstance(outcome, Crashed)
    delay = backoff_delay(
        int(item_number(item, "attempts", 1)),
        settings.delivery_backoff_base,
        settings.delivery_backoff_max,
    )
    asked = outcome.retry_after
    if asked is not None:
        # A floor: never earlier than the server asked, even above DELIVERY_BACKOFF_MAX (which
        # caps the backoff only) or past the retry window; an absurd one is held at a week.
        delay = min(max(asked, 0.0), MAX_RETRY_AFTER)
    fields = {**attempt, "last_error": outcome.error}
    error = f"{outcome.status or ''} {outcome.error[:200]}".strip()
    notes["error"] = log_error(outcome)
    # An item whose window cannot be read (a corrupt one) is past it. A retry the server asked
    # for is scheduled even past the window, unless this attempt began past it already.
    end = item_number(item, "window_start", 0.0) + settings.delivery_max_age
    if now > end or (now + delay > end and asked is None):
        reason = "crashed" if crashed else "exhausted"
        dead = _stat_for(item, "dead_lettered", reason)
        fields["reason"] = reason
        notes["reason"] = reason
        told = _told(claim, "dead_lettered", outcome.status, f"{reason}: {outcome.error}")
        dead_lettered = worker.ledger.dead_letter(claim, dead, fields, error, told)
        return _applied(dead_lettered, "dead_lettered")
    word = "crashed" if crashed else "retried"
    retried = _stat_for(item, word)
    if outcome.code == LIMIT_EXCEEDED:
        # The merchant's plan quota: retrying will not help until a person acts.
        retried = _stat_for(item, "limit_exceeded")
        log.error(
            "refcampaign_limit_exceeded",
            item=claim.item_id,
            externalId=item.get("external_id") or None,
            retry_in=round(delay, 3),
        )
    limited = outcome.code == LIMIT_EXCEEDED
    told = _told(claim, "limit_exceeded" if limited else word, outcome.status, outcome.error)
    finished = worker.ledger.schedule_retry(claim, delay, retried, fields, error, told)
    if finished:
        notes.update(delay=round(delay, 3), next_attempt_at=iso_millis(now + delay))
    return _applied(finished, word)


def _applied(finished: bool, word: str) -> str:
    """`word` when the ledger applied the outcome; "stale" when the claim no longer held it."""
    return word if finished else "stale"
