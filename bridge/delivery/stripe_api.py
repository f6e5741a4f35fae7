"""Stripe's API through the official SDK, for catch-up and for finding a refund's sale: over
the outbound session, never following a redirect (the key would travel to wherever it points),
the SDK's own retries off (each caller retries, paced, itself)."""

from __future__ import annotations

import json
import logging
from typing import Any

import requests
import stripe

from bridge.delivery.http_client import OutboundSession, new_session
from bridge.delivery.outcomes import redirect_host
from config import Settings

# The SDK logs every request and error body at info: a line per page, and Stripe's 401 message
# names the key (masked). Callers log their own retries and failures instead.
logging.getLogger("stripe").setLevel(logging.WARNING)


class Redirected(requests.RequestException):
    """A 3xx answer: never followed (the key would travel to wherever it points)."""

    def __init__(self, host: str) -> None:
        super().__init__(f"redirect to {host}")
        self.host = host


class NoRedirectSession(OutboundSession):
    """The outbound session, with a 3xx raised so that the SDK cannot read it as a bad body."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        response = super().request(method, url, *args, **kwargs)
        if 300 <= response.status_code < 400:
            text = url.decode() if isinstance(url, bytes) else url
            raise Redirected(redirect_host(response.headers.get("Location"), text))
        return response


def stripe_client(settings: Settings, timeout: float) -> stripe.StripeClient:
    """A client of STRIPE_API_KEY at STRIPE_API_URL, each request within `timeout` seconds."""
    return stripe.StripeClient(
        settings.stripe_api_key or "",
        base_addresses={"api": settings.stripe_api_url},
        http_client=stripe.RequestsClient(
            session=new_session(pool_size=1, kind=NoRedirectSession), timeout=timeout
        ),
        max_network_retries=0,
    )


def get_json(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    """`GET path` as the plain JSON Stripe sent (not the SDK's objects); Stripe's errors raised
    as the SDK raises them."""
    response = client.raw_request("get", path, **params)
    if not isinstance(response, stripe.StripeResponse):  # raw_request returns one, unparsed
        raise stripe.APIError("the Stripe SDK answered with something other than a response")
    body = json.loads(response.body)
    if not isinstance(body, dict):
        raise stripe.APIError("Stripe answered with something other than an object")
    return body


def header(exc: stripe.StripeError, name: str) -> str | None:
    """A header of Stripe's error answer."""
    headers = exc.headers or {}
    value = headers.get(name) or headers.get(name.lower())
    return str(value) if value is not None else None
