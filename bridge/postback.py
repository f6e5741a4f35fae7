"""The two outbound HTTP calls: a postback to RefCampaign and an IPN verification to PayPal."""

from __future__ import annotations

from typing import Any

import requests

from bridge.outcomes import Outcome, RetryLater, classify_postback, classify_verification
from bridge.paypal import verification_body
from config import Settings

USER_AGENT = "refbridge/0.1"


def new_session(proxy_for: str, pool_size: int = 16) -> requests.Session:
    """A pooled keep-alive session; create one per process, after fork."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    # Proxy settings are read from the environment once here, not on every request (which
    # requests does by default, at a measurable cost per postback).
    session.proxies.update(requests.utils.get_environ_proxies(proxy_for))
    session.trust_env = False
    return session


def post_conversion(
    session: requests.Session, settings: Settings, payload: dict[str, Any]
) -> Outcome:
    """POST one conversion; the classified answer. Never raises for network trouble."""
    headers = {"Authorization": f"Bearer {settings.refcampaign_api_key}"}
    try:
        response = session.post(
            settings.postback_url, json=payload, headers=headers, timeout=settings.delivery_timeout
        )
    except requests.Timeout:
        return RetryLater(None, "timeout")
    except requests.RequestException as exc:
        return RetryLater(None, f"connection error: {type(exc).__name__}")
    conversion_id = None
    if 200 <= response.status_code < 300:
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("conversionId"), str):
                conversion_id = body["conversionId"]
        except ValueError:
            pass
    return classify_postback(response.status_code, response.headers, response.text, conversion_id)


def verify_ipn(session: requests.Session, settings: Settings, raw: bytes) -> Outcome:
    """Ask PayPal whether it sent `raw`: `cmd=_notify-validate&` + the exact bytes received."""
    try:
        response = session.post(
            settings.paypal_ipn_verify_url,
            data=verification_body(raw),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=settings.delivery_timeout,
        )
    except requests.Timeout:
        return RetryLater(None, "timeout")
    except requests.RequestException as exc:
        return RetryLater(None, f"connection error: {type(exc).__name__}")
    return classify_verification(response.status_code, response.text)
