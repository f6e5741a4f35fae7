"""Real provider payloads from `tests/samples/` (SOURCES.md there says where each came from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent / "samples"
STRIPE_FIXTURES_DIR = FIXTURES_DIR / "stripe"
PAYPAL_FIXTURES_DIR = FIXTURES_DIR / "paypal"
PAYPAL_WEBHOOK_FIXTURES_DIR = FIXTURES_DIR / "paypal_webhooks"

# Upstream stored only `data` for the `pay__*` files; the envelope they get here is made up.
PAY_EVENT_CREATED = 1_700_000_000


def stripe_fixture(name: str) -> dict[str, Any]:
    """A full Stripe event from `tests/samples/stripe/<name>` (a fresh copy on every call)."""
    loaded: dict[str, Any] = json.loads((STRIPE_FIXTURES_DIR / name).read_text(encoding="utf-8"))
    if name.startswith("pay__") and name.endswith(".data.json"):
        return _event_envelope(name.removeprefix("pay__").removesuffix(".data.json"), loaded)
    return loaded


def paypal_fixture(name: str) -> bytes:
    """The raw IPN body in `tests/samples/paypal/<name>`, byte for byte."""
    return (PAYPAL_FIXTURES_DIR / name).read_bytes()


def paypal_webhook_fixture(name: str) -> bytes:
    """The raw PayPal REST webhook event body in `tests/samples/paypal_webhooks/<name>`."""
    return (PAYPAL_WEBHOOK_FIXTURES_DIR / name).read_bytes()


def paypal_webhook_fixture_names() -> list[str]:
    """Every PayPal REST webhook event fixture file name, sorted."""
    return sorted(path.name for path in PAYPAL_WEBHOOK_FIXTURES_DIR.glob("*.json"))


def stripe_fixture_names() -> list[str]:
    """Every Stripe fixture file name, sorted."""
    return sorted(path.name for path in STRIPE_FIXTURES_DIR.glob("*.json"))


def _event_envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` wrapped in the Event envelope Stripe sends around it."""
    obj = data.get("object", {})
    return {
        "id": f"evt_test_{event_type.replace('.', '_')}",
        "object": "event",
        "api_version": None,  # unknown: upstream did not keep the envelope
        "created": PAY_EVENT_CREATED,
        "data": data,
        "livemode": bool(obj.get("livemode", False)),
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
