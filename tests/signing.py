"""Signing Stripe test events with Stripe's documented scheme (via the official SDK)."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

SECRET = "whsec_test_refbridge_primary"
OTHER_SECRET = "whsec_test_refbridge_rolled"


def stripe_body(event: dict[str, Any]) -> bytes:
    """The request body Stripe would send for `event`."""
    return json.dumps(event, indent=2).encode("utf-8")


def stripe_headers(
    body: bytes, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of a webhook request signed with `secret` at `timestamp` (default now)."""
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8"), secret, timestamp=timestamp or int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}
