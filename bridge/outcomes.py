"""What one attempt came to, as values, and when the next one is due (pure functions)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

BODY_KEEP = 500


@dataclass(frozen=True)
class Delivered:
    """RefCampaign accepted the postback (or already had it)."""

    status: int
    conversion_id: str | None


@dataclass(frozen=True)
class RetryLater:
    """A transient failure; `retry_after` is the delay the server asked for, if any."""

    status: int | None
    error: str
    retry_after: float | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A terminal failure: no retry will help."""

    reason: str
    status: int | None
    error: str


@dataclass(frozen=True)
class Verified:
    """PayPal answered VERIFIED."""


@dataclass(frozen=True)
class Invalid:
    """PayPal answered INVALID: the message did not come from PayPal (or was altered)."""


@dataclass(frozen=True)
class Crashed:
    """The attempt raised before any answer came: retried on the backoff like a 5xx, and
    dead-lettered with reason `crashed` once past the window, so a poison item ends."""

    error: str
    status: None = None
    retry_after: None = None


Outcome = Delivered | RetryLater | DeadLetter | Verified | Invalid | Crashed

TERMINAL_REASONS = {
    401: "unauthorized",
    403: "unauthorized",
    409: "conflict",
    422: "invalid_payload",
}


def truncate(text: str) -> str:
    """A response body cut to what a dead-letter entry keeps."""
    return text if len(text) <= BODY_KEEP else text[:BODY_KEEP] + "…"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_postback(
    status: int, headers: Mapping[str, str], body: str, conversion_id: str | None
) -> Outcome:
    """RefCampaign's answer to a postback, per the README's table of attempt outcomes."""
    if 200 <= status < 300:
        return Delivered(status, conversion_id)
    if status == 429:
        return RetryLater(status, truncate(body), retry_after_seconds(headers.get("Retry-After")))
    if status >= 500 or status == 408:
        return RetryLater(status, truncate(body))
    if 400 <= status < 500:
        return DeadLetter(TERMINAL_REASONS.get(status, "client_error"), status, truncate(body))
    # 1xx/3xx are not answers the API documents: treat as transient rather than lose the order.
    return RetryLater(status, truncate(body))


def classify_verification(status: int, body: str) -> Outcome:
    """PayPal's answer to `cmd=_notify-validate`."""
    if status == 200 and body.strip() == "VERIFIED":
        return Verified()
    if status == 200 and body.strip() == "INVALID":
        return Invalid()
    return RetryLater(status, truncate(body))


def backoff_delay(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay after `attempts` failed tries: base·2^(n-1) plus 0–25 % jitter, capped."""
    exponent = min(max(attempts - 1, 0), 60)
    delay = min(cap, base * (2**exponent))
    jitter: float = (rng or random).uniform(0, 0.25) * delay
    return float(min(cap, delay + jitter))
