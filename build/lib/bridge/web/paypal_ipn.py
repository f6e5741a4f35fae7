"""`POST /webhooks/paypal/ipn`: keep the exact bytes for a worker to verify with PayPal."""

from __future__ import annotations

from typing import Any

import structlog
from flask import Blueprint, Response, jsonify

from bridge.delivery import intake
from bridge.delivery.ledger import Ledger
from bridge.providers.paypal.ipn import INTAKE_FIELDS, is_form_encoded, is_test_ipn, parse_ipn
from bridge.web.edge import count_webhook, read_body
from config import Settings

# Real IPNs are a few KB; the limit bounds what an unverified message costs to read and keep.
MAX_IPN_BODY = 64 * 1024
# PayPal's ipn_track_id is 13 characters; an unverified message's goes into logs and the ledger.
MAX_TRACK_ID = 64
log = structlog.get_logger("refbridge.web")


def paypal_ipn_blueprint(settings: Settings, ledger: Ledger) -> Blueprint:
    """The IPN listener route, bound to `settings` and `ledger`."""
    routes = Blueprint("paypal_ipn", __name__)

    @routes.post("/webhooks/paypal/ipn")
    def paypal_ipn() -> Any:
        # The exact bytes, before anything parses the form: PayPal verifies them byte for byte.
        raw = read_body(cache=True, limit=MAX_IPN_BODY)
        if not is_form_encoded(raw):
            count_webhook(ledger, provider="paypal", outcome="rejected", reason="not_form_encoded")
            return jsonify(error="body is not a form-encoded IPN message"), 400
        # Only what intake needs: nobody has verified this message yet.
        fields = parse_ipn(raw, only=INTAKE_FIELDS)
        track_id = fields.get("ipn_track_id", "")[:MAX_TRACK_ID]
        structlog.contextvars.bind_contextvars(provider="paypal", provider_event_id=track_id)
        if is_test_ipn(fields) and settings.paypal_verifies_live:
            # A sandbox message must never become a live conversion.
            log.info("webhook_rejected", reason="test_ipn_on_live")
            count_webhook(ledger, provider="paypal", outcome="rejected", reason="test_ipn_on_live")
            return Response(b"", 200)
        outcome = intake.accept_ipn(ledger, raw, track_id)
        log.info("webhook_recorded", outcome=intake.word(outcome))
        return Response(b"", 200)

    return routes
