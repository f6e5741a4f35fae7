"""PayPal's REST webhook event history (`GET /v1/notifications/webhooks-events`), paged by
PayPal's own `next` links, throttled and retried.

The Bearer token comes from the webhook path's token code (bridge/delivery/paypal_api.py): the
same client-credentials request and cache. An event read here came from PayPal's API over TLS
with the merchant's credentials, so it counts as verified and is mapped at once with the webhook
path's `map_webhook_event`; it is recorded under the webhook path's provider name and event id,
and its ledger item is its capture id (an IPN's `txn_id`), so whichever of webhook, IPN and
catch-up records a payment first, the others find a duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import structlog

from bridge.catchup.source import CredentialsError, ProviderEvent, SourceError
from bridge.catchup.throttle import MAX_TRIES, TIMEOUT, Throttle, pause_before_retry
from bridge.conversion import Conversion, Ignored, Rejected, email_hash
from bridge.delivery import paypal_api
from bridge.delivery.http_client import OutboundSession, new_session, send
from bridge.delivery.intake import PAYPAL_WEBHOOK
from bridge.delivery.outcomes import RetryLater, is_redirect, redirect_host, retry_after_seconds
from bridge.providers.paypal.webhooks import CAPTURE_COMPLETED, map_webhook_event
from bridge.refund import CLAWBACKS_OFF, Refund
from config import Settings

EVENTS_PATH = "/v1/notifications/webhooks-events"
# PayPal documents a default of 10 and no maximum for `page_size`; 100 keeps a page one
# request for a busy hour without betting on an undocumented upper bound.
PAGE_SIZE = 100
MAX_RATE = 20.0  # PayPal publishes no per-endpoint figure: the same ceiling as Stripe's
NO_CREDENTIALS = (
    "PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET must be set: catch-up reads PayPal's event "
    "history with the REST app's credentials"
)
REFUSED = "PayPal refused PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET ({status}): check the REST app"
log = structlog.get_logger("refbridge.catchup")


class PayPalEvents:
    """The REST webhook events PayPal kept for a window, a page at a time, newest first."""

    provider = PAYPAL_WEBHOOK  # the webhook path's: the same seen keys and counters

    def __init__(
        self,
        settings: Settings,
        throttle: Throttle | None = None,
        sleep: Callable[[float], None] = time.sleep,
        tokens: paypal_api.TokenCache | None = None,
    ) -> None:
        if not settings.paypal_client_id or not settings.paypal_client_secret:
            raise CredentialsError(NO_CREDENTIALS)
        self.settings = settings
        self.recurring = settings.recurring_conversions
        self.origin = _origin(settings.paypal_api_url)
        self.session: OutboundSession = new_session(pool_size=1)
        self.tokens = tokens or paypal_api.TokenCache()
        self.throttle = throttle or Throttle(MAX_RATE)
        self.sleep = sleep
        self.requests = 0

    def pages(self, since: int, until: int) -> Iterator[list[ProviderEvent]]:
        query = urlencode(
            {"start_time": _iso(since), "end_time": _iso(until), "page_size": PAGE_SIZE}
        )
        url: str | None = f"{self.settings.paypal_api_url}{EVENTS_PATH}?{query}"
        while url:
            page = self._page(url)
            raw = page.get("events")
            events = (
                [_event(e) for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
            )
            yield events
            url = self._next(page) if events else None

    def map(self, event: ProviderEvent) -> Conversion | Refund | Ignored:
        result = map_webhook_event(event.body, recurring=self.recurring)
        if isinstance(result, Refund) and not self.settings.refund_clawbacks:
            return Ignored(CLAWBACKS_OFF)
        if isinstance(result, Rejected):
            # The webhook path records these as rejected; here there is nothing to record.
            return Ignored(result.reason, result.detail)
        if isinstance(result, Conversion) and not result.attributed:
            return self._with_payer_email(event, result)
        return result

    def _with_payer_email(self, event: ProviderEvent, conversion: Conversion) -> Conversion:
        """As the webhook path does: a capture without attribution gets its order's payer
        e-mail hash, when PayPal answers; otherwise it stays unattributed."""
        if event.body.get("event_type") != CAPTURE_COMPLETED:
            return conversion
        self.throttle.wait()
        self.requests += 1
        email = paypal_api.capture_payer_email(self._api(), event.body)
        if isinstance(email, RetryLater):
            log.warning("catchup_order_lookup_failed", provider="paypal", error=email.error)
            return conversion
        return replace(conversion, customer_email_hash=email_hash(email)) if email else conversion

    def _next(self, page: dict[str, Any]) -> str | None:
        """The page's `next` link, only to PAYPAL_API_URL's origin (the token goes with it)."""
        links = page.get("links")
        for link in links if isinstance(links, list) else []:
            if isinstance(link, dict) and link.get("rel") == "next":
                href = link.get("href")
                if not isinstance(href, str) or not href:
                    return None
                if _origin(href) != self.origin:
                    host = redirect_host(href, "")
                    raise SourceError(
                        f"PayPal's next page link points to {host}, not PAYPAL_API_URL: refused"
                    )
                return href
        return None

    def _api(self) -> paypal_api.Api:
        until = time.time() + TIMEOUT
        return paypal_api.Api(self.session, self.settings, self.tokens, until, log_refusal=False)

    def _page(self, url: str) -> dict[str, Any]:
        """One page's JSON, retried on 429, 5xx and network errors; a 401 gets one new token."""
        error = ""
        refreshed = False
        attempt = 0
        while attempt < MAX_TRIES:
            attempt += 1
            token = self._token()
            self.throttle.wait()
            self.requests += 1
            answer = self._get(url, token)
            if isinstance(answer, requests.Response):
                status = answer.status_code
                if status == 200:
                    return _json(answer)
                if status == 401 and not refreshed:
                    # The cached token expired or was revoked early: a fresh one, once.
                    self.tokens.forget(token)
                    refreshed, attempt = True, attempt - 1
                    continue
                if status in (401, 403):
                    raise CredentialsError(REFUSED.format(status=status))
                if is_redirect(status):
                    raise SourceError(
                        f"redirect to {redirect_host(answer.headers.get('Location'), url)}"
                    )
                if status != 429 and status < 500:
                    raise SourceError(f"PayPal refused the event list request ({status})")
                error = "rate limited (429)" if status == 429 else f"PayPal answered {status}"
                delay = retry_after_seconds(answer.headers.get("Retry-After"))
            else:
                error, delay = answer.error, None
            pause_before_retry(self.sleep, "paypal", error, attempt, delay)
        raise SourceError(f"PayPal's event list failed {MAX_TRIES} times: {error}")

    def _token(self) -> str:
        """The cached token or a new one; refused credentials end the run, the rest retries."""
        for attempt in range(1, MAX_TRIES + 1):
            token = self.tokens.current(self._api())
            if isinstance(token, str):
                return token
            if token.status in (400, 401, 403):
                raise CredentialsError(REFUSED.format(status=token.status))
            if token.error.startswith("token request: redirect"):
                raise SourceError(token.error)
            pause_before_retry(self.sleep, "paypal", token.error, attempt, token.retry_after)
        raise SourceError(f"PayPal's token request failed {MAX_TRIES} times")

    def _get(self, url: str, token: str) -> requests.Response | RetryLater:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return send(self.session, "GET", url, TIMEOUT, headers=headers)


def _event(body: dict[str, Any]) -> ProviderEvent:
    return ProviderEvent(str(body.get("id") or ""), body, _created(body.get("create_time")))


def _created(value: object) -> int:
    """Unix seconds of an event's `create_time` (RFC 3339); 0 when it is unreadable."""
    if not isinstance(value, str) or len(value) > 40:
        return 0
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return int(moment.timestamp()) if moment.tzinfo else 0


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", "", None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SourceError("PayPal's event list answered something other than a JSON object")
    return body
