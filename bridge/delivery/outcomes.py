"""What one attempt came to, as values, and when the next one is due (pure functions)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

BODY_KEEP = 500
# delta-seconds is ASCII digits only (str.isdigit() also takes "²", which float() refuses).
_DELTA_SECONDS = re.compile(r"[0-9]+")
# What a host named in a Location header may show in an error: it came from a remote server.
_HOST_TEXT = re.compile(r"[^A-Za-z0-9.:\[\]-]")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,39}")


@dataclass(frozen=True)
class Delivered:
    """RefCampaign accepted the postback (or already had it)."""

    status: int
    conversion_id: str | None
    # A refund RefCampaign had applied already (`alreadyRefunded`): a no-op there.
    already: bool = False
    # The affiliate's commission RefCampaign booked for a conversion, when it says.
    commission_id: str | None = None
    commission_amount: int | float | None = None


@dataclass(frozen=True)
class RetryLater:
    """A transient failure; `retry_after` is the delay the server asked for, if any."""

    status: int | None
    error: str
    retry_after: float | None = None
    # RefCampaign's `error.code` of a 429: LIMIT_EXCEEDED is the merchant's plan quota.
    code: str | None = None


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
    code: None = None


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
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)  # inf for an absurdly long one: the caller caps every delay
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def redirect_host(location: str | None, request_url: str) -> str:
    """The host a 3xx answer points at: the Location's, else (relative or missing) the request's.

    A relative Location resolves against the request, so its host is the request's host.
    Credentials in the URL are never shown, only the host and an explicit port.
    """
    try:
        parts = urlsplit((location or "").strip())
        host, port = parts.hostname, parts.port
        if not host:
            parts = urlsplit(request_url)
            host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return "unknown host"
    if not host:
        return "unknown host"
    shown = f"[{host}]" if ":" in host else host
    shown = shown if port is None else f"{shown}:{port}"
    return _HOST_TEXT.sub("?", shown)[:100]


def is_redirect(status: int) -> bool:
    """True for a 3xx answer: never followed, a failed attempt retried like a 5xx."""
    return 300 <= status < 400


def retry_later(
    status: int, headers: Mapping[str, str], body: str, request_url: str = "", what: str = ""
) -> RetryLater:
    """A failed answer, retried on the backoff: a 3xx as `redirect to <host>` (never followed),
    a 429 with its Retry-After, anything else with its body (truncated); `what` prefixes the
    error ("token request: …")."""
    prefix = f"{what}: " if what else ""
    if is_redirect(status):
        host = redirect_host(headers.get("Location"), request_url)
        return RetryLater(status, f"{prefix}redirect to {host}")
    if status != 429:
        return RetryLater(status, prefix + truncate(body), None)
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    return RetryLater(status, prefix + truncate(body), retry_after, error_code(body))


def error_code(body: str) -> str | None:
    """RefCampaign's `error.code` in an error answer (`{"success": false, "error": {"code": …}}`),
    a short word only."""
    try:
        parsed = json.loads(body[:10_000])
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _CODE.fullmatch(code) else None


def classify_postback(
    status: int,
    headers: Mapping[str, str],
    body: str,
    conversion_id: str | None,
    request_url: str = "",
) -> Outcome:
    """RefCampaign's answer to a postback, per docs/architecture.md's table of attempt outcomes."""
    if 200 <= status < 300:
        return Delivered(status, conversion_id)
    # Followed, a 302 turns the POST into a GET whose 2xx would be taken for delivery.
    if is_redirect(status) or status in (408, 429) or status >= 500:
        return retry_later(status, headers, body, request_url)
    if 400 <= status < 500:
        return DeadLetter(TERMINAL_REASONS.get(status, "client_error"), status, truncate(body))
    # 1xx is not an answer the API documents: treat as transient rather than lose the order.
    return RetryLater(status, truncate(body))


def classify_verification(
    status: int, body: str, headers: Mapping[str, str] | None = None, request_url: str = ""
) -> Outcome:
    """PayPal's answer to `cmd=_notify-validate`."""
    if status == 200 and body.strip() == "VERIFIED":
        return Verified()
    if status == 200 and body.strip() == "INVALID":
        return Invalid()
    if is_redirect(status):
        location = (headers or {}).get("Location")
        return RetryLater(status, f"redirect to {redirect_host(location, request_url)}")
    return RetryLater(status, truncate(body))


def log_error(outcome: RetryLater | Crashed | DeadLetter) -> str:
    """What a log line may say about a failed attempt: never the response body, which may
    quote anything the remote side chose to send."""
    if outcome.status is None:
        return outcome.error  # our own words: timeout, connection error, attempt crashed
    if is_redirect(outcome.status):
        return f"HTTP {outcome.status}, {outcome.error}"
    return f"HTTP {outcome.status}"


def backoff_delay(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay after `attempts` failed tries: base·2^(n-1) plus 0–25 % jitter, capped."""
    exponent = min(max(attempts - 1, 0), 60)
    delay = min(cap, base * (2**exponent))
    jitter: float = (rng or random).uniform(0, 0.25) * delay
    return float(min(cap, delay + jitter))
