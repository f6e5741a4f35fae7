"""The RefCampaign postback payload and the outcomes of mapping a provider message."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.refund import Refund

ConversionType = Literal["SALE", "LEAD", "TRIAL", "CUSTOM"]


def email_hash(email: str) -> str:
    """SHA-256 hex of the trimmed, lower-cased UTF-8 email (RefCampaign's `customerEmailHash`)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


# `name@host.tld` anywhere in a text, as in "Jane <jane@example.com>" or "mailto:a@b.io": a
# character of the name, "@", the host up to its first dot, the dot, one more character. The
# host is matched possessively (`++`): nothing is ever given back, so a search is linear in the
# text (an attempt gets past its first character only before an "@", and the hosts after two
# "@" never overlap).
_NOT_IN_ADDRESS = r"\s@<>()\[\]{},;:\"'`|"
_EMAIL_IN_TEXT = re.compile(rf"[^{_NOT_IN_ADDRESS}]@[^{_NOT_IN_ADDRESS}.]++\.[^{_NOT_IN_ADDRESS}]")


def contains_email(text: str) -> bool:
    """True when `text` holds something shaped like an email address (`name@host.tld`) anywhere."""
    return _EMAIL_IN_TEXT.search(text) is not None


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z` suffix, seconds precision."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(timestamp: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds and a `Z`, like the log lines' own time."""
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


@dataclass(frozen=True)
class Handles:
    """The provider's names for who paid and for what, kept with a sent conversion (never sent).

    `customer`: the customer's handles, most specific first (the subscription's, then the
    customer's or payer's): what a later payment's missing attribution is looked up by.
    `payment`: the payment's own handles (intent, charge, invoice, PayPal transaction): what a
    later refund is matched by. Each is `<provider>:<kind>:<id>` (see `handle`).
    """

    customer: tuple[str, ...] = ()
    payment: tuple[str, ...] = ()


# Longer ids are no provider's: a handle is a bounded key, whatever a message says.
MAX_HANDLE_ID_LENGTH = 255


def handle(kind: str, value: object) -> str | None:
    """`kind:value` for a non-blank id string of sane length, else None (`kind` names its
    provider and sort, e.g. `stripe:sub`, `paypal:payer`)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_HANDLE_ID_LENGTH:
        return None
    return f"{kind}:{text}"


def handles_of(*pairs: tuple[str, object]) -> tuple[str, ...]:
    """The handles of those (kind, value) pairs that are ids, in order, without repeats."""
    found = (handle(kind, value) for kind, value in pairs)
    return tuple(dict.fromkeys(h for h in found if h is not None))


@dataclass(frozen=True)
class Conversion:
    """One postback, exactly the keys of RefCampaign's API (see `to_payload`), and the handles
    it is remembered by (`handles`, never sent)."""

    external_id: str
    conversion_type: ConversionType
    amount: int
    currency: str
    session_id: str | None = None
    click_id: str | None = None
    affiliate_code: str | None = None
    customer_email_hash: str | None = None
    customer_id: str | None = None
    converted_at: str | None = None
    custom_params: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    handles: Handles = field(default_factory=Handles)
    # The externalId whose remembered ids this payment was attributed by (metadata.attributedFrom).
    attributed_from: str | None = None

    @property
    def has_tracking_ids(self) -> bool:
        """True when the payment names its affiliate itself: a session, click or affiliate code
        (what a later payment of the same customer is attributed by; an email hash is not)."""
        return bool(self.session_id or self.click_id or self.affiliate_code)

    @property
    def attributed(self) -> bool:
        """True when at least one attribution identifier is present."""
        return self.has_tracking_ids or bool(self.customer_email_hash)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of `POST /api/v1/conversions/postback`; absent fields are left out."""
        payload: dict[str, Any] = {
            "externalId": self.external_id,
            "conversionType": self.conversion_type,
            "amount": self.amount,
            "currency": self.currency,
        }
        optional = {
            "sessionId": self.session_id,
            "clickId": self.click_id,
            "affiliateCode": self.affiliate_code,
            "customerEmailHash": self.customer_email_hash,
            "customerId": self.customer_id,
            "convertedAt": self.converted_at,
            "customParams": self.custom_params or None,
            "metadata": self._metadata() or None,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        return payload

    def _metadata(self) -> dict[str, Any]:
        if self.attributed_from is None:
            return self.metadata
        return {**self.metadata, "attributedFrom": self.attributed_from}


@dataclass(frozen=True)
class Ignored:
    """A message that maps to no conversion; `reason` is a short snake_case word for metrics."""

    reason: str
    detail: str = ""
    # A message that is sent as nothing may still name an affiliate for later payments (a
    # PayPal subscr_signup's `custom`): what to remember of it, never sent.
    remember: Conversion | None = None


@dataclass(frozen=True)
class Rejected:
    """A message refused after verification (bad amount, foreign receiver): recorded, not sent."""

    reason: str
    detail: str = ""


MappingResult = Conversion | Refund | Ignored | Rejected
