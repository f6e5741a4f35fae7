"""The web process: webhook routes that verify, map and record, plus health and metrics."""

from __future__ import annotations

import sys
import time
from typing import Any

import structlog
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from bridge import intake
from bridge.conversion import Ignored
from bridge.dispatch import Dispatch, make_dispatch, producer_app
from bridge.ledger import Ledger
from bridge.logs import configure_logging
from bridge.paypal import is_form_encoded, is_test_ipn, parse_ipn
from bridge.redis_client import REDIS_ERRORS, connect
from bridge.stripe_mapping import map_stripe_event
from bridge.stripe_signature import StripeEventError, verify_stripe_event
from config import ConfigError, Settings

MAX_BODY = 1024 * 1024
log = structlog.get_logger("refbridge.web")


def create_app(settings: Settings | None = None, dispatch: Dispatch | None = None) -> Flask:
    """Build the web app; with no settings, read them from the environment (exit on error)."""
    configure_logging()
    if settings is None:
        settings = _settings_or_exit()
    app = Flask("refbridge")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    ledger = Ledger(connect(settings.require("REDIS_URL").redis_url or ""))
    if dispatch is None:
        dispatch = make_dispatch(producer_app(settings.redis_url or ""))
    if not settings.stripe_webhook_secrets:
        log.warning(
            "config_warning",
            variable="STRIPE_WEBHOOK_SECRET",
            problem="not set: Stripe webhooks will be refused with 400",
        )
    app.extensions["refbridge"] = {"settings": settings, "ledger": ledger, "dispatch": dispatch}
    _routes(app, settings, ledger, dispatch)
    _errors(app)
    return app


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"refbridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _routes(app: Flask, settings: Settings, ledger: Ledger, dispatch: Dispatch) -> None:
    @app.post("/webhooks/stripe")
    def stripe_webhook() -> Any:
        received_at = time.time()
        raw = request.get_data(cache=False)
        try:
            event = verify_stripe_event(
                raw,
                request.headers.get("Stripe-Signature"),
                settings.stripe_webhook_secrets,
                settings.stripe_signature_tolerance,
            )
        except StripeEventError as exc:
            log.info("webhook_rejected", provider="stripe", reason=exc.reason)
            return jsonify(error=str(exc), reason=exc.reason), 400
        structlog.contextvars.bind_contextvars(provider="stripe", provider_event_id=event["id"])
        result = map_stripe_event(event, recurring=settings.recurring_conversions)
        if isinstance(result, Ignored):
            log.info("webhook_ignored", event_type=event["type"], reason=result.reason)
            return jsonify(received=True)
        outcome = intake.accept_conversion(
            ledger, result, provider="stripe", event_id=event["id"], received_at=received_at
        )
        _hand_on(outcome, dispatch, result.external_id)
        return jsonify(received=True)

    @app.post("/webhooks/paypal/ipn")
    def paypal_ipn() -> Any:
        # The exact bytes, before anything parses the form: PayPal verifies them byte for byte.
        raw = request.get_data(cache=True)
        if not is_form_encoded(raw):
            return jsonify(error="body is not a form-encoded IPN message"), 400
        fields = parse_ipn(raw)
        track_id = fields.get("ipn_track_id", "")
        structlog.contextvars.bind_contextvars(provider="paypal", provider_event_id=track_id)
        if is_test_ipn(fields) and settings.paypal_verifies_live:
            ledger.count("rejected")
            log.info("webhook_rejected", reason="test_ipn_on_live")
            return Response(b"", 200)
        _hand_on(intake.accept_ipn(ledger, raw, track_id), dispatch, None)
        return Response(b"", 200)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        ledger.redis.ping()
        return jsonify(status="ready")


def _hand_on(outcome: intake.IntakeResult, dispatch: Dispatch, external_id: str | None) -> None:
    if isinstance(outcome, intake.Accepted):
        try:
            dispatch(outcome.claim)
        except Exception as exc:  # noqa: BLE001 — recorded already; the lease brings it back
            log.warning("dispatch_failed", item=outcome.claim.item_id, error=type(exc).__name__)
    log.info("webhook_recorded", outcome=type(outcome).__name__.lower(), externalId=external_id)


def _errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description or exc.name), exc.code or 500

    for error in REDIS_ERRORS:
        app.register_error_handler(error, _redis_down)

    @app.teardown_request
    def _clear(_: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()


def _redis_down(exc: Exception) -> Any:
    log.warning("redis_unavailable", error=type(exc).__name__)
    return jsonify(error="storage unavailable, retry later"), 503
