"""Which conversion a Stripe payment belongs to, asked of Stripe's API when memory does not
know it (sold before the bridge was installed, or forgotten): SPEC, Refunds and chargebacks.

A one-time payment's conversion is its checkout session (`GET /v1/checkout/sessions?
payment_intent=…`). A subscription's payment paid an invoice (the charge's `invoice` before API
2025-03-31; since, `GET /v1/invoice_payments?payment[payment_intent]=…`): a renewal's conversion
is that invoice, the first invoice's is the checkout session that created the subscription.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from bridge.delivery.deadline import within
from bridge.delivery.outcomes import DeadLetter, RetryLater, retry_after_seconds
from bridge.delivery.pacing import Throttle
from bridge.delivery.stripe_api import Redirected, get_json, header, stripe_client
from bridge.providers.stripe.refunds import stripe_id
from config import Settings

# Stripe allows 25 requests/s per endpoint by default; a worker process stays well under.
MAX_RATE = 10.0


@dataclass(frozen=True)
class Found:
    """The conversion's externalId, the invoice the payment paid (if it paid one), and when
    Stripe created the conversion's object (Unix seconds; None when unknown)."""

    external_id: str | None
    invoice: str | None = None
    created: int | None = None


Lookup = Found | RetryLater | DeadLetter


def find_sale(settings: Settings, payment_intent: str, invoice: str) -> Lookup:
    """The conversion of the payment `payment_intent` (its invoice when the charge named it):
    Found(None) when Stripe knows none; a RetryLater for an error that may pass."""
    client = _client(settings)
    try:
        with within(settings.delivery_timeout):  # all of it, whatever each answer dribbles
            return _find(client, payment_intent, invoice)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return Found(None, invoice or None)
        return DeadLetter("stripe_refused", exc.http_status, _error(exc))
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        # Stripe's message names the key (masked): not kept.
        return DeadLetter("stripe_unauthorized", exc.http_status, "Stripe refused STRIPE_API_KEY")
    except stripe.RateLimitError as exc:
        delay = retry_after_seconds(header(exc, "Retry-After"))
        return RetryLater(429, "stripe look-up: rate limited", delay)
    except stripe.APIConnectionError as exc:
        cause = exc.__cause__
        text = str(cause) if isinstance(cause, Redirected) else "connection error"
        return RetryLater(None, f"stripe look-up: {text}")
    except stripe.StripeError as exc:
        return RetryLater(exc.http_status, f"stripe look-up: Stripe answered {exc.http_status}")


def _find(client: stripe.StripeClient, payment_intent: str, invoice: str) -> Found:
    if payment_intent:
        sessions = _get(client, "/v1/checkout/sessions", payment_intent=payment_intent)
        session = _first(sessions)
        if session is not None:
            return Found(_id(session) or None, None, _created(session))
        if not invoice:
            invoice = _invoice_paid_by(client, payment_intent)
    if not invoice:
        return Found(None)
    return _invoice_conversion(client, invoice)


def _invoice_paid_by(client: stripe.StripeClient, payment_intent: str) -> str:
    """The invoice a payment intent paid (Stripe's invoice payments, API 2025-03-31 on)."""
    payments = _get(
        client,
        "/v1/invoice_payments",
        payment={"type": "payment_intent", "payment_intent": payment_intent},
    )
    paid = _first(payments)
    return _id(paid.get("invoice")) if paid is not None else ""


def _invoice_conversion(client: stripe.StripeClient, invoice_id: str) -> Found:
    """A renewal invoice is its own conversion; a first invoice, its subscription's checkout."""
    invoice = _get(client, f"/v1/invoices/{invoice_id}")
    reason = invoice.get("billing_reason")
    if reason == "subscription_cycle":
        return Found(_id(invoice) or None, invoice_id, _created(invoice))
    if reason != "subscription_create":
        return Found(None, invoice_id)
    subscription = _id(invoice.get("subscription")) or _basil_subscription(invoice)
    if not subscription:
        return Found(None, invoice_id)
    session = _first(_get(client, "/v1/checkout/sessions", subscription=subscription))
    if session is None:
        return Found(None, invoice_id)
    return Found(_id(session) or None, invoice_id, _created(session))


def _basil_subscription(invoice: Mapping[str, Any]) -> str:
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return _id(details.get("subscription")) if isinstance(details, Mapping) else ""


def _get(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    _throttle().wait()
    return get_json(client, path, **params)


def _first(page: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = page.get("data")
    first = data[0] if isinstance(data, list) and data else None
    return first if isinstance(first, Mapping) else None


def _id(value: object) -> str:
    """An id, whether the field holds it or the expanded object; "" when none."""
    return stripe_id(value) or ""


def _created(obj: Mapping[str, Any]) -> int | None:
    created = obj.get("created")
    return created if isinstance(created, int) and not isinstance(created, bool) else None


def _error(exc: stripe.StripeError) -> str:
    code = getattr(exc, "code", None)
    return f"Stripe answered {exc.http_status}" + (f" ({code})" if isinstance(code, str) else "")


@functools.cache
def _throttle() -> Throttle:
    return Throttle(MAX_RATE)


@functools.lru_cache(maxsize=4)
def _client(settings: Settings) -> stripe.StripeClient:
    """The process's client: each request within a quarter of DELIVERY_TIMEOUT, so that a
    look-up's four at most and the refund's POST fit in one attempt's lease."""
    return stripe_client(settings, settings.delivery_timeout / 4)
