"""The webhook routes: read, verify, map, record, hand on. No remote call happens in here."""

from __future__ import annotations

import time
from typing import Any

import redis
import structlog
from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from bridge import intake
from bridge.conversion import Ignored
from bridge.ledger import Ledger
from bridge.metrics import stat
from bridge.paypal import INTAKE_FIELDS, is_form_encoded, is_test_ipn, parse_ipn
from bridge.stripe_mapping import map_stripe_event
from bridge.stripe_signature import StripeEventError, verify_stripe_event
from config import Settings

MAX_BODY = 1024 * 1024
# Real IPNs are a few KB; the limit bounds what an unverified message costs to read and keep.
MAX_IPN_BODY = 64 * 1024
# PayPal's ipn_track_id is 13 characters; an unverified message's goes into logs and the ledger.
MAX_TRACK_ID = 64
# Stripe's answer body, written once rather than by jsonify per webhook (BENCHMARKS.md).
RECEIVED = b'{"received":true}\n'
log = structlog.get_logger("refbridge.web")


def register_webhooks(app: Flask, settings: Settings, ledger: Ledger) -> None:
    """Add `POST /webhooks/stripe` and `POST /webhooks/paypal/ipn` to `app`."""

    def count(**labels: str) -> None:
        # Counting a refusal must not turn a 4xx into a 503: not while Redis is down, nor when
        # it answers with an error (full under noeviction, a read-only replica).
        try:
            ledger.count(stat("webhooks", **labels))
        except redis.exceptions.RedisError as exc:
            log.warning("metric_not_counted", error=type(exc).__name__, **labels)

    @app.post("/webhooks/stripe")
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
            count(provider="stripe", outcome="rejected", reason=exc.reason)
            return jsonify(error=str(exc), reason=exc.reason), 400
        structlog.contextvars.bind_contextvars(provider="stripe", provider_event_id=event["id"])
        result = map_stripe_event(event, recurring=settings.recurring_conversions)
        if isinstance(result, Ignored):
            log.info("webhook_ignored", event_type=event["type"], reason=result.reason)
            count(provider="stripe", outcome="ignored", reason=result.reason)
            return _received()
        outcome = intake.accept_conversion(
            ledger, result, provider="stripe", event_id=event["id"], received_at=received_at
        )
        log.info("webhook_recorded", outcome=_word(outcome), externalId=result.external_id)
        return _received()

    @app.post("/webhooks/paypal/ipn")
    def paypal_ipn() -> Any:
        # The exact bytes, before anything parses the form: PayPal verifies them byte for byte.
        raw = read_body(cache=True, limit=MAX_IPN_BODY)
        if not is_form_encoded(raw):
            count(provider="paypal", outcome="rejected", reason="not_form_encoded")
            return jsonify(error="body is not a form-encoded IPN message"), 400
        # Only what intake needs: nobody has verified this message yet.
        fields = parse_ipn(raw, only=INTAKE_FIELDS)
        track_id = fields.get("ipn_track_id", "")[:MAX_TRACK_ID]
        structlog.contextvars.bind_contextvars(provider="paypal", provider_event_id=track_id)
        if is_test_ipn(fields) and settings.paypal_verifies_live:
            # A sandbox message must never become a live conversion.
            log.info("webhook_rejected", reason="test_ipn_on_live")
            count(provider="paypal", outcome="rejected", reason="test_ipn_on_live")
            return Response(b"", 200)
        outcome = intake.accept_ipn(ledger, raw, track_id)
        log.info("webhook_recorded", outcome=_word(outcome))
        return Response(b"", 200)


def read_body(cache: bool, limit: int = MAX_BODY) -> bytes:
    """The whole request body: 413 past `limit`, 400 when cut short or malformed."""
    # One byte over the limit, so that "exactly the limit" can be told from "more". This
    # request's own limit: the app's MAX_CONTENT_LENGTH is the largest of all routes.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=cache)
    except HTTPException:
        raise
    except Exception:  # noqa: BLE001 — gunicorn's chunked-encoding errors, cut connections
        abort(400, "malformed request body")
    # Werkzeug stops a streamed (chunked) body quietly at the limit instead of refusing it.
    if len(raw) > limit:
        abort(413)
    if request.content_length is not None and len(raw) != request.content_length:
        abort(400, "request body is shorter than its Content-Length")
    return raw


def _received() -> Response:
    """Stripe's 200: `{"received": true}`, as jsonify would write it."""
    return Response(RECEIVED, 200, mimetype="application/json")


def _word(outcome: intake.IntakeResult) -> str:
    return type(outcome).__name__.lower()
