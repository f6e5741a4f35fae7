"""The two outbound HTTP calls: a postback to RefCampaign and an IPN verification to PayPal."""

from __future__ import annotations

import os
import threading
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from bridge.delivery.deadline import DeadlineAdapter, within
from bridge.delivery.outcomes import (
    DeadLetter,
    Delivered,
    Outcome,
    RetryLater,
    classify_postback,
    classify_verification,
    truncate,
)
from bridge.providers.paypal.ipn import verification_body
from config import Settings

USER_AGENT = "refbridge/0.1"
# Destinations are a handful of configured URLs; the bound only guards against a surprise.
_MAX_DESTINATIONS = 64


class OutboundSession(requests.Session):
    """A pooled keep-alive session that never follows a redirect and reads the environment's
    proxy and CA settings once per destination.

    requests reads them (and ~/.netrc) on every request when `trust_env` is on, at a measurable
    cost per postback; reading them once per process for one host only applied RefCampaign's
    proxy decision to PayPal too. Here each destination (scheme, host, port) gets its own
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY decision and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE,
    read on its first request in this process.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._destinations: dict[str, tuple[dict[str, str], str | None]] = {}
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """Send one request; a 3xx answer is returned as it is, never followed."""
        # Followed, a 302 turns a POST into a GET, and that page's 2xx looks like a delivery.
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        """requests' hook for per-request settings: the environment's, cached per destination."""
        text = url.decode() if isinstance(url, bytes) else url or ""
        env_proxies, ca_bundle = self.environment_for(text)
        proxies = {**env_proxies, **(proxies or {})}
        if (verify is True or verify is None) and ca_bundle:
            verify = ca_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def environment_for(self, url: str) -> tuple[dict[str, str], str | None]:
        """(proxies, CA bundle) the environment sets for `url`'s destination."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        found = self._destinations.get(key)
        if found is None:
            found = (
                requests.utils.get_environ_proxies(url),
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"),
            )
            with self._lock:
                if len(self._destinations) >= _MAX_DESTINATIONS:
                    self._destinations.clear()
                self._destinations[key] = found
        return found


S = TypeVar("S", bound=OutboundSession)


def new_session(pool_size: int = 16, kind: type[S] = OutboundSession) -> S:  # type: ignore[assignment]
    """A pooled keep-alive session (an OutboundSession, or `kind` of one); one per process,
    made after fork."""
    session = kind()
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def post_conversion(
    session: requests.Session, settings: Settings, payload: dict[str, Any]
) -> Outcome:
    """POST one conversion; the classified answer. Never raises for network trouble."""
    url = settings.postback_url
    response = post_to_refcampaign(session, settings, url, payload)
    if isinstance(response, RetryLater):
        return response
    outcome = classify_postback(response.status_code, response.headers, response.text, None, url)
    if not isinstance(outcome, Delivered):
        return outcome
    answer = answer_data(response)
    return Delivered(
        outcome.status,
        _text(answer.get("conversionId")),
        commission_id=_text(answer.get("commissionId")),
        commission_amount=_number(answer.get("commissionAmount")),
    )


def post_to_refcampaign(
    session: requests.Session, settings: Settings, url: str, payload: dict[str, Any]
) -> requests.Response | RetryLater:
    """POST `payload` as JSON to RefCampaign's `url` with the API key, within DELIVERY_TIMEOUT;
    network trouble as a RetryLater (see `send`)."""
    headers = {"Authorization": f"Bearer {settings.refcampaign_api_key}"}
    return send(session, "POST", url, settings.delivery_timeout, json=payload, headers=headers)


def answer_data(response: requests.Response) -> dict[str, Any]:
    """What RefCampaign answered: the object inside its envelope (`{"success", "data": {…},
    "meta"}`), or the top level where it has no envelope (the answer to a conversion already
    tracked); empty when the body is no JSON object."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    data = body.get("data")
    return data if isinstance(data, dict) else body


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def post_refund(session: requests.Session, settings: Settings, payload: dict[str, Any]) -> Outcome:
    """POST one refund to RefCampaign's refund endpoint; the classified answer (a 404 is
    `not_found`: RefCampaign has no conversion of that externalId). Never raises for network
    trouble."""
    url = settings.refund_url
    response = post_to_refcampaign(session, settings, url, payload)
    if isinstance(response, RetryLater):
        return response
    if response.status_code == 404:
        return DeadLetter("not_found", 404, truncate(response.text))
    outcome = classify_postback(response.status_code, response.headers, response.text, None, url)
    if not isinstance(outcome, Delivered):
        return outcome
    # {"success": true, "data": {"success": true, "conversionId": …, "alreadyRefunded": …}}
    data = answer_data(response)
    already = data.get("alreadyRefunded") is True
    return Delivered(outcome.status, _text(data.get("conversionId")), already)


def verify_ipn(session: requests.Session, settings: Settings, raw: bytes) -> Outcome:
    """Ask PayPal whether it sent `raw`: `cmd=_notify-validate&` + the exact bytes received."""
    url = settings.paypal_ipn_verify_url
    response = send(
        session,
        "POST",
        url,
        settings.delivery_timeout,
        data=verification_body(raw),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if isinstance(response, RetryLater):
        return response
    return classify_verification(response.status_code, response.text, response.headers, url)


def send(
    session: requests.Session, method: str, url: str, timeout: float, **request: Any
) -> requests.Response | RetryLater:
    """One request that never follows a redirect, answered in full within `timeout` seconds in
    all (bridge/delivery/deadline.py: not per socket read, which a dribbling answer never
    exceeds); network trouble and a missed deadline as a RetryLater, not raised."""
    with within(timeout) as exchange:
        try:
            return session.request(method, url, timeout=timeout, allow_redirects=False, **request)
        except requests.Timeout:
            return RetryLater(None, "timeout")
        except requests.RequestException as exc:
            if exchange.cut:
                return RetryLater(None, f"timeout: no whole answer within {timeout:g} s")
            return RetryLater(None, f"connection error: {type(exc).__name__}")
