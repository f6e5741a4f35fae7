"""Verify a Stripe webhook's `Stripe-Signature` header and parse its body as a JSON event."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, Literal, TypeGuard

import stripe

StripeEventReason = Literal[
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "future_timestamp",
    "no_secret_configured",
    "not_utf8",
    "not_json",
    "not_an_event",
]

# Stripe's header is ~150 characters (a few more with rolled secrets); web servers cap headers
# near 8 KiB anyway, so anything longer is refused before it is split.
MAX_HEADER_LENGTH = 8192
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Only lower-case hex can equal the HMAC the SDK computes; filtering here also keeps non-ASCII
# text away from `hmac.compare_digest`, which raises TypeError on it.
_V1_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class StripeEventError(Exception):
    """A Stripe webhook refused before mapping; `reason` is a short snake_case metric label."""

    def __init__(self, reason: StripeEventReason, message: str) -> None:
        super().__init__(message)
        self.reason: StripeEventReason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"StripeEventError({self.reason!r}, {self.message!r})"


def verify_stripe_event(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    now: float | None = None,
) -> dict[str, Any]:
    """The verified event as plain JSON, or StripeEventError saying why it was refused."""
    usable = configured_secrets(secrets)
    if not usable:
        raise StripeEventError("no_secret_configured", "no Stripe webhook secret is configured")
    if header is None or not header.strip():
        raise StripeEventError("missing_signature", "no Stripe-Signature header")
    text = _decode(payload)
    timestamp, signatures = _parse_header(header)
    _verify_signature(text, timestamp, signatures, usable)
    _check_timestamp(timestamp, tolerance, time.time() if now is None else now)
    return _parse_event(text)


def configured_secrets(secrets: Sequence[str] | str) -> list[str]:
    """The usable secrets, stripped; blank entries dropped; a bare string is split on commas."""
    entries = secrets.split(",") if isinstance(secrets, str) else secrets
    return [s.strip() for s in entries if isinstance(s, str) and s.strip()]


def _decode(payload: bytes) -> str:
    """The body as text; the SDK would raise UnicodeDecodeError on it itself."""
    try:
        return bytes(payload).decode("utf-8")
    except (UnicodeDecodeError, TypeError, ValueError):
        raise StripeEventError("not_utf8", "webhook body is not UTF-8") from None


def _parse_header(header: str) -> tuple[int, list[str]]:
    """The first `t=` timestamp and every well-formed `v1=` signature; other schemes are skipped."""
    if len(header) > MAX_HEADER_LENGTH:
        raise StripeEventError("bad_signature", "Stripe-Signature header is too long")
    timestamp: int | None = None
    seen_timestamp = False
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "t" and not seen_timestamp:
            seen_timestamp = True
            timestamp = int(value) if _TIMESTAMP.fullmatch(value) else None
        elif key == "v1" and _V1_SIGNATURE.fullmatch(value):
            signatures.append(value)
    if timestamp is None:
        raise StripeEventError("bad_signature", "Stripe-Signature header has no valid t= timestamp")
    if not signatures:
        raise StripeEventError("bad_signature", "Stripe-Signature header has no v1 signature")
    return timestamp, signatures


def _verify_signature(text: str, timestamp: int, signatures: list[str], secrets: list[str]) -> None:
    """Return when any secret signed the body (secret rolling); raise bad_signature otherwise."""
    # The SDK gets a canonical header rebuilt from what we parsed, so both read the same `t=`.
    canonical = ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])
    for secret in secrets:
        try:
            # tolerance=None: the SDK checks age against time.time(); we check it against `now`.
            stripe.WebhookSignature.verify_header(text, canonical, secret, tolerance=None)
        except (stripe.SignatureVerificationError, ValueError):
            continue
        return
    raise StripeEventError("bad_signature", "no configured secret matches the Stripe signature")


def _check_timestamp(timestamp: int, tolerance: int, now: float) -> None:
    """Refuse a signature older, or further in the future, than `tolerance` seconds."""
    if tolerance <= 0:
        return  # as the SDK: no tolerance means no age check
    if timestamp < now - tolerance:
        raise StripeEventError("stale_timestamp", f"signature timestamp is over {tolerance}s old")
    if timestamp > now + tolerance:
        raise StripeEventError(
            "future_timestamp", f"signature timestamp is over {tolerance}s in the future"
        )


def _parse_event(text: str) -> dict[str, Any]:
    """The body as a JSON object with the fields every Stripe event carries."""
    try:
        event = json.loads(text)
        # JSON may escape lone surrogates ("\ud800") that no UTF-8 string can hold: refuse them
        # here rather than fail later on a Redis key or an email hash.
        if "\\ud" in text or "\\uD" in text:
            json.dumps(event, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        raise StripeEventError("not_json", "webhook body is not JSON") from None
    if not _is_event(event):
        raise StripeEventError(
            "not_an_event", "webhook body is not a Stripe event (id, type, created, data.object)"
        )
    return event


def _is_event(value: object) -> TypeGuard[dict[str, Any]]:
    """True for an object with string `id` and `type`, integer `created`, object `data.object`."""
    if not isinstance(value, dict):
        return False
    data = value.get("data")
    created = value.get("created")
    return (
        isinstance(value.get("id"), str)
        and bool(value["id"])
        and isinstance(value.get("type"), str)
        and bool(value["type"])
        and isinstance(created, int)
        and not isinstance(created, bool)
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )
