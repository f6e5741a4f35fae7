"""PayPal's event history as catch-up reads it, against the PayPal API stand-in: paging by
PayPal's `next` links, the window's bounds, a foreign next link refused, 429 / 5xx retried,
a 401 on a cached token renewed once, a redirect never followed, credentials never shown; and
that an event read from the history maps exactly as the same event arriving as a webhook."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bridge.catchup.paypal_events import EVENTS_PATH, PayPalEvents
from bridge.catchup.source import CredentialsError, ProviderEvent, SourceError
from bridge.catchup.throttle import Throttle
from bridge.conversion import Conversion, Ignored, Rejected, email_hash
from bridge.delivery.intake import PAYPAL_WEBHOOK
from bridge.providers.paypal.webhooks import map_webhook_event
from config import Settings
from tests.fixtures import paypal_webhook_fixture, paypal_webhook_fixture_names
from tests.standins.paypal_api import (
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_PATH,
    PayPalApi,
    Scripted,
    history_event,
)

NOW = int(time.time())


def settings(api: PayPalApi, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "PAYPAL_CLIENT_ID": CLIENT_ID,
            "PAYPAL_CLIENT_SECRET": CLIENT_SECRET,
            "PAYPAL_API_URL": api.url,
            **extra,
        }
    )


def source(api: PayPalApi, sleeps: list[float] | None = None) -> PayPalEvents:
    waits = sleeps if sleeps is not None else []
    return PayPalEvents(settings(api), throttle=Throttle(1000.0), sleep=waits.append)


def read_all(src: PayPalEvents, since: int, until: int) -> list[list[ProviderEvent]]:
    return list(src.pages(since, until))


def test_pages_follow_next_links_newest_first_within_the_bounds(paypal_api: PayPalApi) -> None:
    inside = [history_event(created=NOW - 3000 + 10 * n) for n in range(230)]
    outside = [history_event(created=NOW - 7200), history_event(created=NOW + 600)]
    paypal_api.add_events(inside + outside)
    pages = read_all(source(paypal_api), NOW - 3600, NOW)
    assert [len(p) for p in pages] == [100, 100, 30]
    got = [e for page in pages for e in page]
    assert {e.event_id for e in got} == {e["id"] for e in inside}
    created = [e.created for e in got]
    assert created == sorted(created, reverse=True)
    calls = paypal_api.calls(EVENTS_PATH)
    first = calls[0]["path"]
    assert "page_size=100" in first and "start_time=" in first and "end_time=" in first
    assert all("index_id=" in c["path"] for c in calls[1:])  # PayPal's own next links
    assert len(paypal_api.calls(TOKEN_PATH)) == 1  # one token for the whole run


def test_an_empty_window_is_one_request(paypal_api: PayPalApi) -> None:
    src = source(paypal_api)
    assert read_all(src, NOW - 60, NOW) == [[]]
    assert src.requests == 1


def test_a_next_link_to_another_origin_is_refused(paypal_api: PayPalApi) -> None:
    paypal_api.add_events([history_event(created=NOW - 100 - n) for n in range(150)])
    paypal_api.next_base = "https://api-m.paypal.example.net"
    src = source(paypal_api)
    pages = src.pages(NOW - 3600, NOW)
    assert len(next(pages)) == 100
    with pytest.raises(SourceError, match=r"api-m\.paypal\.example\.net.*refused"):
        next(pages)
    assert len(paypal_api.calls(EVENTS_PATH)) == 1  # the token never went there


def test_429_waits_as_asked_and_5xx_backs_off(paypal_api: PayPalApi) -> None:
    paypal_api.add_events([history_event(created=NOW - 100)])
    paypal_api.script(
        EVENTS_PATH,
        Scripted(429, {"Retry-After": "3"}),
        Scripted(503),
        Scripted(500),
    )
    sleeps: list[float] = []
    pages = read_all(source(paypal_api, sleeps), NOW - 3600, NOW)
    assert [len(p) for p in pages] == [1]
    assert sleeps == [3.0, 1.0, 2.0]
    assert len(paypal_api.calls(EVENTS_PATH)) == 4


def test_a_401_on_the_cached_token_gets_one_fresh_token(paypal_api: PayPalApi) -> None:
    paypal_api.add_events([history_event(created=NOW - 100 - n) for n in range(150)])
    src = source(paypal_api)
    pages = src.pages(NOW - 3600, NOW)
    assert len(next(pages)) == 100
    paypal_api.revoke_tokens()  # the cached token expires mid-run
    assert len(next(pages)) == 50
    assert len(paypal_api.calls(TOKEN_PATH)) == 2


def test_a_token_refused_twice_ends_the_run_naming_the_variables(paypal_api: PayPalApi) -> None:
    paypal_api.script(EVENTS_PATH, Scripted(401), Scripted(401))
    with pytest.raises(CredentialsError, match="PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET"):
        read_all(source(paypal_api), NOW - 60, NOW)
    assert len(paypal_api.calls(TOKEN_PATH)) == 2


def test_refused_credentials_name_the_variables_never_the_secret(paypal_api: PayPalApi) -> None:
    paypal_api.client_secret = "another-secret"
    with pytest.raises(CredentialsError) as raised:
        read_all(source(paypal_api), NOW - 60, NOW)
    message = str(raised.value)
    assert "PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET" in message and "401" in message
    assert CLIENT_SECRET not in message and CLIENT_ID not in message


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(CredentialsError, match="PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET"):
        PayPalEvents(Settings.from_env({"PAYPAL_CLIENT_ID": CLIENT_ID}))


def test_a_redirect_is_never_followed(paypal_api: PayPalApi) -> None:
    paypal_api.script(EVENTS_PATH, Scripted(302, {"Location": "https://evil.example.org/x"}))
    with pytest.raises(SourceError, match="redirect to evil.example.org"):
        read_all(source(paypal_api), NOW - 60, NOW)
    assert len(paypal_api.calls(EVENTS_PATH)) == 1


def test_retries_end_with_a_clear_error(paypal_api: PayPalApi) -> None:
    paypal_api.script(EVENTS_PATH, *[Scripted(502) for _ in range(8)])
    with pytest.raises(SourceError, match="failed 8 times: PayPal answered 502"):
        read_all(source(paypal_api), NOW - 60, NOW)


@pytest.mark.parametrize("name", paypal_webhook_fixture_names())
def test_a_history_event_maps_exactly_as_its_webhook(paypal_api: PayPalApi, name: str) -> None:
    """Every real sample, read from the history: the webhook path's conversion, or its reason
    to record nothing (what it rejects is ignored here: there is no message to keep)."""
    sample: dict[str, Any] = json.loads(paypal_webhook_fixture(name))
    src = source(paypal_api)
    as_webhook = map_webhook_event(sample, recurring=True)
    if isinstance(as_webhook, Rejected):
        as_webhook = Ignored(as_webhook.reason, as_webhook.detail)
    assert src.map(ProviderEvent(sample["id"], sample, 0)) == as_webhook
    assert src.provider == PAYPAL_WEBHOOK


def test_a_capture_without_attribution_gets_its_orders_payer_hash(paypal_api: PayPalApi) -> None:
    """As on the webhook path: the order's payer e-mail becomes the customerEmailHash."""
    event = history_event(custom="")
    order_id = event["resource"]["supplementary_data"]["related_ids"]["order_id"]
    paypal_api.add_order(order_id, "Buyer@Example.com")
    mapped = source(paypal_api).map(ProviderEvent(event["id"], event, 0))
    assert isinstance(mapped, Conversion)
    assert mapped.customer_email_hash == email_hash("Buyer@Example.com") and mapped.attributed
