"""`POST /webhooks/paypal`: keep a PayPal REST event's exact bytes and transmission headers for
a worker to verify with PayPal's API. No remote call happens in here."""

from __future__ import annotations

import re
from typing import Any

import structlog
from flask import Blueprint, Response, abort, jsonify, request

from bridge.delivery import intake
from bridge.delivery.ledger import Ledger
from bridge.providers.paypal.webhooks import TRANSMISSION_HEADERS, parse_event
from bridge.web.edge import count_webhook, read_body
from config import Settings

# Real events are a few KB; the limit bounds what an unverified message costs to read and keep.
MAX_EVENT_BODY = 256 * 1024
# A transmission signature is ~350 characters of base64, a cert URL ~100: the bound keeps what
# an unverified request may store small.
MAX_HEADER = 1024
# PayPal's event ids are "WH-" and a few dozen letters, digits and dashes; the id becomes part
# of a ledger key and of log lines, so anything else is refused.
EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
PROVIDER = intake.PAYPAL_WEBHOOK
log = structlog.get_logger("refbridge.web")


def paypal_webhooks_blueprint(settings: Settings, ledger: Ledger) -> Blueprint:
    """The PayPal REST webhook route, bound to `settings` and `ledger`."""
    routes = Blueprint("paypal_webhooks", __name__)

    @routes.post("/webhooks/paypal")
    def paypal_webhook() -> Any:
        if not settings.paypal_webhook_id:
            # Without the webhook id PayPal cannot be asked whether it sent an event.
            abort(404)
        raw = read_body(cache=False, limit=MAX_EVENT_BODY)
        headers = transmission_headers()
        if headers is None:
            return _refused("missing_headers", "missing or oversized PAYPAL-* transmission headers")
        event = parse_event(raw)
        if event is None or not EVENT_ID.fullmatch(event["id"]):
            return _refused("not_an_event", "body is not a PayPal webhook event")
        structlog.contextvars.bind_contextvars(provider=PROVIDER, provider_event_id=event["id"])
        outcome = intake.accept_paypal_event(ledger, raw, headers, event["id"])
        log.info("webhook_recorded", outcome=intake.word(outcome), event_type=_short(event))
        return Response(b"", 200)

    def _refused(reason: str, error: str) -> Any:
        log.info("webhook_rejected", provider=PROVIDER, reason=reason)
        count_webhook(ledger, provider=PROVIDER, outcome="rejected", reason=reason)
        return jsonify(error=error, reason=reason), 400

    return routes


def transmission_headers() -> dict[str, str] | None:
    """The five PAYPAL-* headers as received; None when one is missing, empty or too long."""
    found = {}
    for name in TRANSMISSION_HEADERS:
        value = request.headers.get(name)
        if not value or len(value) > MAX_HEADER:
            return None
        found[name] = value
    return found


def _short(event: dict[str, Any]) -> str:
    """The event type for a log line, bounded: nobody has verified it yet."""
    return str(event.get("event_type", ""))[:64]
