"""What every webhook route shares at the public edge: the body within its limit, and counting
a refusal without ever turning it into a 5xx."""

from __future__ import annotations

import redis
import structlog
from flask import abort, request
from werkzeug.exceptions import HTTPException

from bridge.delivery.ledger import Ledger
from bridge.delivery.stats import stat

# The largest body any route accepts (Stripe's); the IPN route takes less.
MAX_BODY = 1024 * 1024
log = structlog.get_logger("refbridge.web")


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


def count_webhook(ledger: Ledger, **labels: str) -> None:
    """Add one to a webhook counter; a Redis failure is logged, never raised."""
    # Counting a refusal must not turn a 4xx into a 503: not while Redis is down, nor when
    # it answers with an error (full under noeviction, a read-only replica).
    try:
        ledger.count(stat("webhooks", **labels))
    except redis.exceptions.RedisError as exc:
        log.warning("metric_not_counted", error=type(exc).__name__, **labels)
