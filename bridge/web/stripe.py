"""`POST /webhooks/stripe`: read, verify, map, record. No remote call happens in here."""

from __future__ import annotations

import time
from typing import Any

import redis
import structlog
from flask import Blueprint, Response, jsonify, request

from bridge.conversion import Ignored
from bridge.delivery import intake, story
from bridge.delivery.ledger import Ledger
from bridge.delivery.stats import stat
from bridge.providers.stripe.mapping import map_stripe_event
from bridge.providers.stripe.signature import StripeEventError, verify_stripe_event
from bridge.refund import CLAWBACKS_OFF, Refund
from bridge.web.edge import count_webhook, read_body
from config import Settings

# Stripe's answer body, written once rather than by jsonify per webhook (bench/NOTES.md).
RECEIVED = b'{"received":true}\n'
log = structlog.get_logger("refbridge.web")


def stripe_blueprint(settings: Settings, ledger: Ledger) -> Blueprint:
    """The Stripe webhook route, bound to `settings` and `ledger`."""
    routes = Blueprint("stripe", __name__)

    @routes.post("/webhooks/stripe")
    def stripe_webhook() -> Any:
        received_at = time.time()
        raw = read_body(cache=False)
        try:
            event = verify_stripe_event(
                raw,
                request.headers.get("Stripe-Signature"),
                settings.stripe_webhook_secrets,
                settings.stripe_signature_tolerance,
            )
        except StripeEventError as exc:
            log.info("webhook_rejected", provider="stripe", reason=exc.reason)
            count_webhook(ledger, provider="stripe", outcome="rejected", reason=exc.reason)
            return jsonify(error=str(exc), reason=exc.reason), 400
        structlog.contextvars.bind_contextvars(provider="stripe", provider_event_id=event["id"])
        result = map_stripe_event(event, recurring=settings.recurring_conversions)
        if isinstance(result, Ignored):
            log.info("webhook_ignored", event_type=event["type"], reason=result.reason)
            _ignored(ledger, event, result, received_at)
            return _received()
        if isinstance(result, Refund):
            return _refund(settings, ledger, result, event, received_at)
        outcome = intake.accept_conversion(
            ledger, result, provider="stripe", event_id=event["id"], received_at=received_at
        )
        log.info(
            "webhook_recorded",
            outcome=intake.word(outcome),
            externalId=result.external_id,
            **_attributed_from(outcome),
        )
        return _received()

    return routes


def _refund(
    settings: Settings, ledger: Ledger, refund: Refund, event: dict[str, Any], received_at: float
) -> Response:
    """Record a refund or lost dispute for a worker to send after its sale (or not at all,
    with REFUND_CLAWBACKS off)."""
    if not settings.refund_clawbacks:
        log.info("webhook_ignored", event_type=event["type"], reason=CLAWBACKS_OFF)
        count_webhook(ledger, provider="stripe", outcome="ignored", reason=CLAWBACKS_OFF)
        return _received()
    outcome = intake.accept_refund(
        ledger,
        refund,
        provider="stripe",
        event_id=event["id"],
        received_at=received_at,
        event_type=event["type"],
    )
    log.info("refund_recorded", outcome=intake.word(outcome), refund=refund.item_id)
    return _received()


def _ignored(ledger: Ledger, event: dict[str, Any], result: Ignored, received_at: float) -> None:
    """Count an ignored event and tell its story, under the object it names (a later event of
    the same checkout or invoice may be its conversion), in one round trip; a Redis failure is
    logged, never raised: nothing was to be recorded."""
    obj = event.get("data", {}).get("object")
    named = obj.get("id") if isinstance(obj, dict) else None
    entry = story.event_entry(
        "stripe",
        event["id"],
        event["type"],
        received_at,
        outcome="ignored",
        reason=result.reason,
        detail=result.detail,
    )
    ignored = stat("webhooks", provider="stripe", outcome="ignored", reason=result.reason)
    name = named if isinstance(named, str) else event["id"]
    try:
        story.tell(ledger.redis, name, entry, [event["id"]], counters=[ignored])
    except redis.exceptions.RedisError as exc:
        log.warning("metric_not_counted", error=type(exc).__name__, outcome="ignored")


def _attributed_from(outcome: intake.IntakeResult) -> dict[str, str]:
    """`attributedFrom` for the log line of a payment attributed from memory."""
    remembered = outcome.attributed_from if isinstance(outcome, intake.Accepted) else None
    return {"attributedFrom": remembered} if remembered else {}


def _received() -> Response:
    """Stripe's 200: `{"received": true}`, as jsonify would write it."""
    return Response(RECEIVED, 200, mimetype="application/json")
