"""One attempt at a ledger item: deliver a conversion, or verify a PayPal message (an IPN or a
REST webhook event) and map it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import requests
import structlog

from bridge.delivery import intake, paypal_api, verified
from bridge.delivery.http_client import post_conversion, verify_ipn
from bridge.delivery.ledger import WORKER_DIED, Claim, Claimed, Ledger, item_number
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
# Items one task claims at a time; each gets its own thread, so every claimed item is being
# worked on at once and a claim's lease (run_lease) covers exactly one attempt.
BATCH = 8
# A task that keeps finding full batches gives its pool process back after this long.
BATCH_LOOP_SECONDS = 5.0


class Occupancy:
    """Who runs attempts in one pool process: a nudged task and the process's listener
    (tasks/listener.py) may each run a batch at once, but a suspect must be the only attempt
    in its process (lua/claim.lua), or a death beside it would be counted against it. So a
    task claims a suspect only while the listener runs nothing, and the listener claims
    nothing while a suspect runs. Both claim through here, one claim at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listener_busy = False
        self._suspect_running = False

    @contextmanager
    def task_claim(self, claim: Callable[..., Claimed]) -> Iterator[Claimed]:
        """`claim(alone=…)` for a nudged task; a suspect it took runs until the block ends."""
        with self._lock:
            claimed = claim(alone=not self._listener_busy)
            self._suspect_running = any(c.died_in for c in claimed.claims)
        try:
            yield claimed
        finally:
            self._suspect_running = False

    @contextmanager
    def listener_claim(self, claim: Callable[[], Claimed]) -> Iterator[Claimed | None]:
        """`claim()` for the listener, None while a suspect runs; its batch runs until the
        block ends."""
        with self._lock:
            claimed = None if self._suspect_running else claim()
            self._listener_busy = claimed is not None and bool(claimed.claims)
        try:
            yield claimed
        finally:
            self._listener_busy = False


@dataclass(frozen=True)
class Worker:
    """What attempts need: the ledger, the HTTP session, settings, a thread pool, the
    process's PayPal API token and who runs attempts in it."""

    ledger: Ledger
    session: requests.Session
    settings: Settings
    threads: ThreadPoolExecutor
    paypal_tokens: paypal_api.TokenCache = field(default_factory=paypal_api.TokenCache)
    occupancy: Occupancy = field(default_factory=Occupancy)


# Items holding a raw provider message that a worker verifies before anything is delivered.
RAW_KINDS = ("ipn", intake.PAYPAL_WEBHOOK)


def process_due(worker: Worker, took_nudge: bool = True) -> int:
    """Claim due items in batches and run an attempt at each, concurrently; how many ran."""
    started, done = time.monotonic(), 0
    while True:
        claim = partial(worker.ledger.claim, run_lease(worker.settings), BATCH, took_nudge)
        with worker.occupancy.task_claim(claim) as claimed:
            claims = run_claimed(worker, claimed)
        took_nudge = False
        done += len(claims)
        # A suspect comes alone (see lua/claim.lua): more work may be waiting behind it.
        more = len(claims) == BATCH or any(c.died_in for c in claims)
        if not more or time.monotonic() - started > BATCH_LOOP_SECONDS:
            return done


def run_claimed(worker: Worker, claimed: Claimed) -> list[Claim]:
    """Run an attempt at each item of one claim, concurrently; the claims that ran."""
    log_deaths(claimed)
    claims = claimed.claims
    list(worker.threads.map(lambda claim: process_item(worker, claim), claims))
    return claims


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
        bound = bound.bind(externalId=item.get("external_id"))
    try:
        outcome = _verify(worker, claim) if raw else _deliver(worker, item)
    except Exception as exc:  # noqa: BLE001 — one item's failure must not stop its batch
        bound.exception("attempt_crashed")
        # The exception's type only: its message may quote the item.
        outcome = Crashed(f"attempt crashed: {type(exc).__name__}")
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


def _deliver(worker: Worker, item: dict[str, str]) -> Outcome:
    return post_conversion(worker.session, worker.settings, json.loads(item["payload"]))


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
            "last_error": "",
        }
        ledger.mark_delivered(claim, fields, latency=now - item_number(item, "received_at", now))
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
        return _applied(ledger.dead_letter(claim, dead, fields, error), "dead_lettered")
    return _retry(worker, claim, item, outcome, attempt, notes)


def _stat_for(item: dict[str, str], outcome: str, reason: str = "") -> str:
    """The counter of an attempt's outcome: postbacks for conversions, verifications for IPNs
    and PayPal REST events."""
    if item.get("kind") == "ipn":
        return stat("verifications", outcome=outcome)
    if item.get("kind") == intake.PAYPAL_WEBHOOK:
        return stat(WEBHOOK_VERIFICATIONS, outcome=outcome)
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
    settings, now = worker.settings, time.time()
    crashed = isinstance(outcome, Crashed)
    delay = backoff_delay(
        int(item_number(item, "attempts", 1)),
        settings.delivery_backoff_base,
        settings.delivery_backoff_max,
    )
    if outcome.retry_after is not None:
        delay = min(outcome.retry_after, settings.delivery_backoff_max)
    fields = {**attempt, "last_error": outcome.error}
    error = f"{outcome.status or ''} {outcome.error[:200]}".strip()
    notes["error"] = log_error(outcome)
    # An item whose window cannot be read (a corrupt one) is past it.
    if now + delay > item_number(item, "window_start", 0.0) + settings.delivery_max_age:
        reason = "crashed" if crashed else "exhausted"
        dead = _stat_for(item, "dead_lettered", reason)
        fields["reason"] = reason
        notes["reason"] = reason
        return _applied(worker.ledger.dead_letter(claim, dead, fields, error), "dead_lettered")
    word = "crashed" if crashed else "retried"
    retried = _stat_for(item, word)
    finished = worker.ledger.schedule_retry(claim, delay, retried, fields, error)
    if finished:
        notes.update(delay=round(delay, 3), next_attempt_at=_iso(now + delay))
    return _applied(finished, word)


def _iso(timestamp: float) -> str:
    """`timestamp` as ISO 8601 UTC with milliseconds, like the log lines' own time."""
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _applied(finished: bool, word: str) -> str:
    """`word` when the ledger applied the outcome; "stale" when the claim no longer held it."""
    return word if finished else "stale"
