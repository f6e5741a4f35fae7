"""The web process: the app factory, health, readiness and metrics."""

from __future__ import annotations

import hmac
from typing import Any

import redis
import structlog
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from bridge import reports
from bridge.ledger import Ledger
from bridge.logs import configure_logging
from bridge.metrics import RedisCollector
from bridge.redis_client import REDIS_ERRORS, connect
from bridge.web_settings import web_settings_or_exit
from bridge.webhooks import MAX_BODY, register_webhooks
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
    ledger = Ledger(
        connect(settings.require("REDIS_URL").redis_url or "", dedicated=True, watched=True)
    )
    if not settings.stripe_webhook_secrets:
        log.warning(
            "config_warning",
            variable="STRIPE_WEBHOOK_SECRET",
            problem="not set: Stripe webhooks will be refused with 400",
        )
    _probe(ledger)
    app.extensions["refbridge"] = {"settings": settings, "ledger": ledger}
    register_webhooks(app, settings, ledger)
    _operations(app, ledger, settings.metrics_bearer_token)
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


def _operations(app: Flask, ledger: Ledger, metrics_token: str | None) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(lambda: reports.metrics_state(ledger)))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        # A write, not a PING: a full Redis (noeviction) answers PING but refuses webhooks.
        ledger.redis.set("rb:readyz", "1", ex=10)
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics() -> Any:
        if metrics_token and not bearer_matches(
            request.headers.get("Authorization"), metrics_token
        ):
            headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}
            return jsonify(error="a valid bearer token is required"), 401, headers
        return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when `authorization` is `Bearer <token>`, compared in constant time."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Header values arrive as latin-1 text: encoded back, they are the bytes the client sent.
    sent = presented.strip().encode("latin-1", "replace")
    return hmac.compare_digest(sent, token.encode("utf-8"))


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
