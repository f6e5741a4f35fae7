"""`GET /healthz`, `/readyz` and `/metrics`: what the platform and on-call look at."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.delivery.ledger import Ledger
from bridge.ops import reports
from bridge.ops.metrics import RedisCollector


def operations_blueprint(ledger: Ledger, metrics_token: str | None) -> Blueprint:
    """Health, readiness and Prometheus metrics (behind `metrics_token` when set)."""
    routes = Blueprint("operations", __name__)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(lambda: reports.metrics_state(ledger)))

    @routes.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @routes.get("/readyz")
    def readyz() -> Any:
        # A write, not a PING: a full Redis (noeviction) answers PING but refuses webhooks.
        ledger.redis.set("rb:readyz", "1", ex=10)
        return jsonify(status="ready")

    @routes.get("/metrics")
    def metrics() -> Any:
        if metrics_token and not bearer_matches(
            request.headers.get("Authorization"), metrics_token
        ):
            headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}
            return jsonify(error="a valid bearer token is required"), 401, headers
        return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    return routes


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when `authorization` is `Bearer <token>`, compared in constant time."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Header values arrive as latin-1 text: encoded back, they are the bytes the client sent.
    sent = presented.strip().encode("latin-1", "replace")
    return hmac.compare_digest(sent, token.encode("utf-8"))
