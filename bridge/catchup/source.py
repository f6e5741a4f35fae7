"""What a provider gives catch-up: pages of its events, and the webhook path's mapping of one.

A provider plugs in by implementing EventSource: Stripe's is in stripe_events.py, PayPal's
REST webhook events in paypal_events.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.conversion import Conversion, Ignored
from bridge.refund import Refund


@dataclass(frozen=True)
class ProviderEvent:
    """One event from the provider's history, as the plain JSON its webhook would carry."""

    event_id: str
    body: Mapping[str, Any]
    created: int  # Unix seconds: how far back through the window a run has come


class EventSource(Protocol):
    """A provider's event history over a time window."""

    provider: str  # the ledger's provider name: the same as its webhook path's
    requests: int  # requests made to the provider so far

    def pages(self, since: int, until: int) -> Iterator[list[ProviderEvent]]:
        """The events created in [since, until], a page at a time (each page one request),
        newest first."""
        ...

    def map(self, event: ProviderEvent) -> Conversion | Refund | Ignored:
        """The webhook path's mapping of `event`."""
        ...


class SourceError(Exception):
    """The provider's history could not be read; the message is safe to print (no secret)."""


class CredentialsError(SourceError):
    """The API key is missing or the provider refused it."""
