"""Stripe's event history (`GET /v1/events`) through the official SDK, throttled and retried.

Pages are requested one at a time with a cursor rather than through `auto_paging_iter()`: a
429 in the middle of the SDK's iterator ends it, while here the same page is asked for again
after a backoff, and each page is recorded in one Redis pipeline. Each page goes through the
client's `raw_request` (the same auth, base address and error classes as `v1.events.list`),
whose body is parsed as the webhook path parses a webhook's: the typed call would build a
StripeObject of every nested field first, 90 % of a run's CPU (bench/catchup.py), only for it
to be turned back into the plain JSON the mapping reads. The SDK retries 409s, 5xx
and network errors itself but not a 429 (only when Stripe adds `Stripe-Should-Retry: true`), and
its retries would bypass the throttle; so its retries are off and every retry is made here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import stripe

from bridge.catchup.source import CredentialsError, ProviderEvent, SourceError
from bridge.catchup.throttle import MAX_TRIES, TIMEOUT, Throttle, pause_before_retry
from bridge.conversion import Conversion, Ignored
from bridge.delivery.outcomes import retry_after_seconds
from bridge.delivery.stripe_api import Redirected, get_json, header, stripe_client
from bridge.providers.stripe.mapping import EVENT_TYPES, map_stripe_event
from bridge.refund import CLAWBACKS_OFF, Refund
from config import Settings

# Stripe allows 100 requests/s in live mode and 25 per endpoint by default: stay well under.
MAX_RATE = 20.0
PAGE_SIZE = 100  # Stripe's largest page
NO_KEY = "STRIPE_API_KEY is not set: catch-up needs a restricted key with read access to Events"
REFUSED = "Stripe refused STRIPE_API_KEY ({status}): check the key and its read access to Events"


class StripeEvents:
    """The mapped event types Stripe kept for a window, newest first, a page at a time."""

    provider = "stripe"

    def __init__(
        self,
        settings: Settings,
        throttle: Throttle | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.stripe_api_key:
            raise CredentialsError(NO_KEY)
        self.recurring = settings.recurring_conversions
        self.clawbacks = settings.refund_clawbacks
        self.client = stripe_client(settings, TIMEOUT)
        self.throttle = throttle or Throttle(MAX_RATE)
        self.sleep = sleep
        self.requests = 0

    def pages(self, since: int, until: int) -> Iterator[list[ProviderEvent]]:
        params: dict[str, Any] = {
            "types": list(EVENT_TYPES),
            "created": {"gte": since, "lte": until},
            "limit": PAGE_SIZE,
        }
        while True:
            page = self._page(params)
            events = [ProviderEvent(str(e["id"]), e, _created(e)) for e in page["data"]]
            yield events
            if not page.get("has_more") or not events:
                return
            params["starting_after"] = events[-1].event_id

    def map(self, event: ProviderEvent) -> Conversion | Refund | Ignored:
        mapped = map_stripe_event(event.body, recurring=self.recurring)
        if isinstance(mapped, Refund) and not self.clawbacks:
            return Ignored(CLAWBACKS_OFF)
        return mapped

    def _page(self, params: dict[str, Any]) -> dict[str, Any]:
        """One page as the plain JSON Stripe sent (what a webhook's body parses to)."""
        error = ""
        for attempt in range(1, MAX_TRIES + 1):
            self.throttle.wait()
            self.requests += 1
            try:
                return get_json(self.client, "/v1/events", **params)
            except (stripe.AuthenticationError, stripe.PermissionError) as exc:
                # Stripe's message names the key (masked): not repeated.
                raise CredentialsError(REFUSED.format(status=exc.http_status)) from None
            except stripe.RateLimitError as exc:
                error, delay = (
                    "rate limited (429)",
                    retry_after_seconds(header(exc, "Retry-After")),
                )
            except stripe.APIConnectionError as exc:
                cause = exc.__cause__
                error = str(cause) if isinstance(cause, Redirected) else "connection error"
                delay = None
            except stripe.APIError as exc:
                error, delay = f"Stripe answered {exc.http_status}", None
            except stripe.StripeError as exc:
                raise SourceError(f"Stripe refused the request ({exc.http_status})") from None
            pause_before_retry(self.sleep, "stripe", error, attempt, delay)
        raise SourceError(f"Stripe's event list failed {MAX_TRIES} times: {error}")


def _created(event: dict[str, Any]) -> int:
    created = event.get("created")
    return created if isinstance(created, int) else 0
