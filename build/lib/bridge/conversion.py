"""The RefCampaign postback payload and the outcomes of mapping a provider message."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

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


@dataclass(frozen=True)
class Conversion:
    """One postback, exactly the keys of RefCampaign's API (see `to_payload`)."""

    external_id: str
    conversion_type: ConversionType
    amount: int
    currency: str
    session_id: str | None = None
    click_id: str | None = None
    customer_email_hash: str | None = None
    customer_id: str | None = None
    converted_at: str | None = None
    custom_params: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def attributed(self) -> bool:
        """True when at least one attribution identifier is present."""
        return bool(self.session_id or self.click_id or self.customer_email_hash)

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
            "customerEmailHash": self.customer_email_hash,
            "customerId": self.customer_id,
            "convertedAt": self.converted_at,
            "customParams": self.custom_params or None,
            "metadata": self.metadata or None,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        return payload


@dataclass(frozen=True)
class Ignored:
    """A message that maps to no conversion; `reason` is a short snake_case word for metrics."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Rejected:
    """A message refused after verification (bad amount, foreign receiver): recorded, not sent."""

    reason: str
    detail: str = ""


MappingResult = Conversion | Ignored | Rejected
