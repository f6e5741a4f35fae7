"""PayPal's REST API for webhook verification: an OAuth2 token by client credentials, cached per
process, and `verify-webhook-signature` with the event spliced in as received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import structlog

from bridge.delivery.http_client import send
from bridge.delivery.outcomes import (
    Invalid,
    Outcome,
    RetryLater,
    Verified,
    retry_after_seconds,
    retry_later,
    truncate,
)
from bridge.providers.paypal.webhooks import capture_order_id, verification_body
from config import Settings

TOKEN_PATH = "/v1/oauth2/token"
VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
ORDER_PATH = "/v2/checkout/orders/"
# A token is renewed this long before PayPal says it expires (at most half its life), so that
# one fetched just before a call never reaches PayPal already expired.
RENEW_BEFORE = 60.0
# A call is not started with less time than this left in its attempt.
MIN_CALL_TIME = 0.5
CREDENTIALS = "PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET"
log = structlog.get_logger("refbridge.worker")


@dataclass(frozen=True)
class Api:
    """One attempt's access to PayPal's API: the process's session and token cache, and the
    wall-clock time by which the attempt must be done (before its claim's lease runs out)."""

    session: requests.Session
    settings: Settings
    tokens: TokenCache
    until: float
    # Catch-up says a refusal in its own one line, naming the variables: no log line as well.
    log_refusal: bool = True

    def timeout(self) -> float | RetryLater:
        """The timeout of the next call: DELIVERY_TIMEOUT, or what is left of the attempt."""
        left = self.until - time.time()
        if left < MIN_CALL_TIME:
            return RetryLater(None, "out of time for this attempt")
        return min(self.settings.delivery_timeout, left)


@dataclass
class TokenCache:
    """One OAuth2 access token per process, shared by the attempt threads."""

    token: str | None = field(default=None, repr=False)
    renew_at: float = 0.0
    failure: RetryLater | None = None
    failed_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self, api: Api) -> str | RetryLater:
        """The cached token while it is fresh, else a new one (one fetch for all threads)."""
        asked = time.monotonic()
        with self.lock:
            if self.token is not None and time.monotonic() < self.renew_at:
                return self.token
            if self.failure is not None and self.failed_at >= asked:
                # Another thread's fetch failed while this one waited: the same answer, at
                # once, rather than eight fetches in a row each up to the timeout.
                return self.failure
            fetched = fetch_token(api)
            if isinstance(fetched, RetryLater):
                self.failure, self.failed_at = fetched, time.monotonic()
                return fetched
            self.token, expires_in = fetched
            self.renew_at = time.monotonic() + expires_in - min(RENEW_BEFORE, expires_in / 2)
            return self.token

    def forget(self, token: str) -> None:
        """Drop `token` (PayPal refused it) unless another thread already replaced it."""
        with self.lock:
            if self.token == token:
                self.token = None


def missing_configuration(settings: Settings) -> str | None:
    """The variables a worker lacks to verify PayPal REST events, or None."""
    missing = [
        name
        for name, value in (
            ("PAYPAL_CLIENT_ID", settings.paypal_client_id),
            ("PAYPAL_CLIENT_SECRET", settings.paypal_client_secret),
            ("PAYPAL_WEBHOOK_ID", settings.paypal_webhook_id),
        )
        if not value
    ]
    return ", ".join(missing) or None


def fetch_token(api: Api) -> tuple[str, float] | RetryLater:
    """A new access token and its lifetime in seconds; why not as a RetryLater."""
    settings, timeout = api.settings, api.timeout()
    if isinstance(timeout, RetryLater):
        return timeout
    url = settings.paypal_api_url + TOKEN_PATH
    response = send(
        api.session,
        "POST",
        url,
        timeout,
        data={"grant_type": "client_credentials"},
        auth=(settings.paypal_client_id or "", settings.paypal_client_secret or ""),
        headers={"Accept": "application/json"},
    )
    if isinstance(response, RetryLater):
        return RetryLater(None, f"token request: {response.error}")
    status = response.status_code
    if status == 200:
        return _token_in(response)
    if status in (400, 401, 403):
        # Retried, not dead-lettered: credentials get fixed, and the events wait for it.
        if api.log_refusal:
            log.error("paypal_credentials_refused", status=status, variables=CREDENTIALS)
        return RetryLater(status, f"PayPal refused {CREDENTIALS} (token request HTTP {status})")
    # 429, 5xx, 3xx and the like: retried on the backoff.
    return retry_later(status, response.headers, response.text, url, "token request")


def _token_in(response: requests.Response) -> tuple[str, float] | RetryLater:
    """The token and lifetime of a 200 answer; its body is never kept, it holds the token."""
    try:
        body = response.json()
        token, expires_in = body["access_token"], float(body.get("expires_in", 0))
    except (ValueError, KeyError, TypeError):
        return RetryLater(200, "token request: unexpected answer")
    if not isinstance(token, str) or not token or not expires_in > 0:
        return RetryLater(200, "token request: unexpected answer")
    return token, min(expires_in, 24 * 3600.0)


def verify_event(api: Api, raw: bytes, headers: Mapping[str, str]) -> Outcome:
    """Ask PayPal whether it sent event `raw` with these transmission headers."""
    settings = api.settings
    missing = missing_configuration(settings)
    if missing:
        log.error("config_error", variable=missing, problem="not set: cannot verify PayPal events")
        return RetryLater(None, f"{missing} not set: cannot verify PayPal webhook events")
    body = verification_body(raw, headers, settings.paypal_webhook_id or "")
    response = _with_token(api, lambda token, timeout: _verify_with(api, token, timeout, body))
    if isinstance(response, RetryLater):
        return response
    url = settings.paypal_api_url + VERIFY_PATH
    return classify_webhook_verification(response.status_code, response.text, response.headers, url)


Call = Callable[[str, float], "requests.Response | RetryLater"]


def _with_token(api: Api, call: Call) -> requests.Response | RetryLater:
    """`call(token, timeout)` with the cached token; on a 401, with a fresh token once more."""
    response = _once(api, call)
    if isinstance(response, tuple):
        token, answer = response
        if answer.status_code != 401:
            return answer
        # The cached token expired or was revoked early: a fresh one, once.
        api.tokens.forget(token)
        response = _once(api, call)
    return response if not isinstance(response, tuple) else response[1]


def _once(api: Api, call: Call) -> tuple[str, requests.Response] | RetryLater:
    """`call` with the current token, within the attempt's time; the token and the answer."""
    token = api.tokens.current(api)
    if isinstance(token, RetryLater):
        return token
    timeout = api.timeout()
    if isinstance(timeout, RetryLater):
        return timeout
    answer = call(token, timeout)
    return answer if isinstance(answer, RetryLater) else (token, answer)


def capture_payer_email(api: Api, event: Mapping[str, Any]) -> str | None | RetryLater:
    """The payer's e-mail of a verified capture's order (`GET /v2/checkout/orders/{id}`), for
    its `customerEmailHash`; None when the event names no order or the order has no e-mail."""
    order_id = capture_order_id(event)
    if order_id is None:
        return None
    url = api.settings.paypal_api_url + ORDER_PATH + quote(order_id, safe="")

    def get(token: str, timeout: float) -> requests.Response | RetryLater:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        answer = send(api.session, "GET", url, timeout, headers=headers)
        if isinstance(answer, RetryLater):
            return RetryLater(None, f"order look-up: {answer.error}")
        return answer

    response = _with_token(api, get)
    if isinstance(response, RetryLater):
        return response
    # Never the body in an error: an order's body holds the payer's e-mail.
    if response.status_code == 200:
        return _payer_email(response)
    if response.status_code in (403, 404):
        return None  # not this app's order, or gone: the conversion stays as attributed
    retry_after = None
    if response.status_code == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return RetryLater(response.status_code, "order look-up failed", retry_after)


def _payer_email(response: requests.Response) -> str | None:
    try:
        order = response.json()
    except ValueError:
        return None
    payer = order.get("payer") if isinstance(order, dict) else None
    email = payer.get("email_address") if isinstance(payer, dict) else None
    return email if isinstance(email, str) and 0 < len(email) <= 254 else None


def _verify_with(
    api: Api, token: str, timeout: float, body: bytes
) -> requests.Response | RetryLater:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = api.settings.paypal_api_url + VERIFY_PATH
    return send(api.session, "POST", url, timeout, data=body, headers=headers)


def classify_webhook_verification(
    status: int, body: str, headers: Mapping[str, str], request_url: str = ""
) -> Outcome:
    """PayPal's answer to `verify-webhook-signature`: SUCCESS, FAILURE, or try again later.

    Any answer other than a 200 with a verification status is retried on the backoff (and
    dead-lettered past the window, replayable): a 4xx here means a configuration to fix
    (the webhook id, the app), not a forged event.
    """
    if status == 200:
        verdict = _verification_status(body)
        if verdict == "SUCCESS":
            return Verified()
        if verdict == "FAILURE":
            return Invalid()
        return RetryLater(status, "unexpected verification answer: " + truncate(body))
    return retry_later(status, headers, body, request_url)


def _verification_status(body: str) -> str | None:
    try:
        answer: Any = json.loads(body)
    except ValueError:
        return None
    verdict = answer.get("verification_status") if isinstance(answer, dict) else None
    return verdict if isinstance(verdict, str) else None
