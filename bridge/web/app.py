"""The web process's app factory: one Blueprint per provider, plus health and metrics."""

from __future__ import annotations

from typing import Any

import redis
import structlog
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import publisher
from bridge.delivery.replicas import Replicas
from bridge.logs import configure_logging
from bridge.redis_client import REDIS_ERRORS, client_for
from bridge.web.edge import MAX_BODY
from bridge.web.operations import operations_blueprint
from bridge.web.paypal_ipn import paypal_ipn_blueprint
from bridge.web.paypal_webhooks import paypal_webhooks_blueprint
from bridge.web.settings import web_settings_or_exit
from bridge.web.stripe import stripe_blueprint
from config import Settings

log = structlog.get_logger("refbridge.web")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app; with no settings, read them from the environment (exit on error)."""
    configure_logging()
    if settings is None:
        settings = web_settings_or_exit()
    app = Flask("refbridge")
    # One byte over the limit, so that read_body can tell "exactly 1 MiB" from "more".
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1
    settings.require("REDIS_URL")
    ledger = Ledger(
        client_for(settings, watched=True),
        settings.attribution_memory_days,
        publisher(settings).deliver,
        replicas=Replicas.of(settings),
    )
    if not settings.stripe_webhook_secrets:
        log.warning(
            "config_warning",
            variable="STRIPE_WEBHOOK_SECRET",
            problem="not set: Stripe webhooks will be refused with 400",
        )
    _probe(ledger)
    app.extensions["refbridge"] = {"settings": settings, "ledger": ledger}
    app.register_blueprint(stripe_blueprint(settings, ledger))
    app.register_blueprint(paypal_ipn_blueprint(settings, ledger))
    app.register_blueprint(paypal_webhooks_blueprint(settings, ledger))
    app.register_blueprint(operations_blueprint(ledger, settings.metrics_bearer_token))
    _errors(app)
    return app


def _probe(ledger: Ledger) -> None:
    """Reach Redis once at start, so that an unreachable one is named at once in the log."""
    try:
        ledger.redis.ping()
    except redis.exceptions.RedisError:
        # The client logged it once (host and port, never the password). The web serves on:
        # /healthz answers, webhooks get 503 and are resent, and Redis may come back.
        pass


def _errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description or exc.name), exc.code or 500

    # Redis down, hung, full (noeviction answers writes with an OOM error) or restarting:
    # answer 503 so that Stripe and PayPal send the message again later.
    app.register_error_handler(redis.exceptions.RedisError, _redis_down)

    @app.teardown_request
    def _clear(_: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()


def _redis_down(exc: Exception) -> Any:
    if not isinstance(exc, REDIS_ERRORS):  # those the client logs once per outage
        log.warning("redis_unavailable", error=type(exc).__name__)
    return jsonify(error="storage unavailable, retry later"), 503
