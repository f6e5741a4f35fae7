"""A catch-up run as a worker makes it on its own: when one is due, under the lock, logged.

Every configured provider is caught up within the one lock: Stripe when STRIPE_API_KEY is set,
PayPal REST when PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET and PAYPAL_WEBHOOK_ID are.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from bridge.catchup.paypal_events import PayPalEvents
from bridge.catchup.run import run_catchup
from bridge.catchup.schedule import claim_runs
from bridge.catchup.source import EventSource, SourceError
from bridge.catchup.stripe_events import StripeEvents
from bridge.catchup.summary import Summary
from bridge.delivery import paypal_api
from bridge.delivery.intake import PAYPAL_WEBHOOK
from bridge.delivery.ledger import Ledger
from config import Settings

log = structlog.get_logger("refbridge.catchup")
SOURCES: dict[str, Callable[[Settings], EventSource]] = {
    "stripe": StripeEvents,
    PAYPAL_WEBHOOK: PayPalEvents,
}


def configured_providers(settings: Settings) -> list[str]:
    """The providers whose history this deployment can read, by their ledger names."""
    providers = []
    if settings.stripe_api_key:
        providers.append("stripe")
    if paypal_api.missing_configuration(settings) is None:
        providers.append(PAYPAL_WEBHOOK)
    return providers


def run_if_due(settings: Settings, ledger: Ledger) -> list[Summary] | None:
    """Catch up every configured provider over the last CATCHUP_WINDOW seconds if no worker
    did within CATCHUP_INTERVAL; the summaries, or None when it was not this worker's turn."""
    claimed = claim_runs(ledger.redis, configured_providers(settings), settings.catchup_interval)
    if claimed is None:
        return None
    lock, providers = claimed
    try:
        summaries = [_run_one(settings, ledger, provider) for provider in providers]
        return [s for s in summaries if s is not None]
    finally:
        lock.release()


def _run_one(settings: Settings, ledger: Ledger, provider: str) -> Summary | None:
    until = int(time.time())
    log.info("catchup_started", provider=provider, window=settings.catchup_window)
    try:
        source = SOURCES[provider](settings)
        summary = run_catchup(
            source, ledger, until - settings.catchup_window, until, trigger="auto"
        )
    except SourceError as exc:
        # One provider's failure does not keep the next from its run.
        log.error("catchup_failed", provider=provider, error=str(exc))
        return None
    fields = summary.as_json()
    if summary.recorded:
        # A webhook that never arrived was just found: webhooks are being missed.
        log.warning("catchup_recovered", recovered=summary.recorded, **fields)
    else:
        log.info("catchup_finished", **fields)
    return summary
