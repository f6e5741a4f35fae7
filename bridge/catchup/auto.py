"""A catch-up run as a worker makes it on its own: when one is due, under the lock, logged."""

from __future__ import annotations

import time

import structlog

from bridge.catchup.run import run_catchup
from bridge.catchup.schedule import claim_run
from bridge.catchup.source import SourceError
from bridge.catchup.stripe_events import StripeEvents
from bridge.catchup.summary import Summary
from bridge.delivery.ledger import Ledger
from config import Settings

log = structlog.get_logger("refbridge.catchup")


def run_if_due(settings: Settings, ledger: Ledger) -> Summary | None:
    """Run Stripe catch-up over the last CATCHUP_WINDOW seconds if no worker ran it within
    CATCHUP_INTERVAL; the summary, or None when it was not this worker's turn."""
    lock = claim_run(ledger.redis, "stripe", settings.catchup_interval)
    if lock is None:
        return None
    try:
        until = int(time.time())
        source = StripeEvents(settings)
        log.info("catchup_started", provider="stripe", window=settings.catchup_window)
        try:
            summary = run_catchup(
                source, ledger, until - settings.catchup_window, until, trigger="auto"
            )
        except SourceError as exc:
            log.error("catchup_failed", provider="stripe", error=str(exc))
            return None
        fields = summary.as_json()
        if summary.recorded:
            # A webhook that never arrived was just found: webhooks are being missed.
            log.warning("catchup_recovered", recovered=summary.recorded, **fields)
        else:
            log.info("catchup_finished", **fields)
        return summary
    finally:
        lock.release()
