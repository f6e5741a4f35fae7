"""Catch-up's pure parts: the time window, the summary, the throttle, the lock's expiry, and
that an event read through the Stripe SDK maps exactly as the same event arriving as a webhook."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bridge.catchup.schedule import lock_ttl
from bridge.catchup.source import CredentialsError
from bridge.catchup.stripe_events import StripeEvents
from bridge.catchup.summary import Summary
from bridge.catchup.throttle import Throttle
from bridge.catchup.window import parse_moment, parse_window
from bridge.providers.stripe.mapping import EVENT_TYPES, map_stripe_event
from bridge.providers.stripe.signature import verify_stripe_event
from config import Settings
from tests.fixtures import stripe_fixture, stripe_fixture_names
from tests.signing import SECRET, stripe_body, stripe_headers
from tests.standins.stripe_api import StripeAPI, sample_events

NOW = 1_800_000_000.0
KEY = "sk_test_catchup_units"


@pytest.mark.parametrize(
    ("text", "back"),
    [("30m", 1800), ("72h", 259200), ("7d", 604800), ("45s", 45), (" 1h ", 3600)],
)
def test_durations_count_back_from_now(text: str, back: int) -> None:
    assert parse_moment(text, NOW) == NOW - back


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-05-01T00:00:00Z", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T02:00:00+02:00", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T00:00:00.5+00:00", datetime(2026, 5, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_iso_times_with_a_zone(text: str, moment: datetime) -> None:
    assert parse_moment(text, NOW) == moment.timestamp()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-05-01T00:00:00", "no time zone"),
        ("yesterday", "neither a duration"),
        ("72", "neither a duration"),
        ("-3h", "neither a duration"),
        ("3w", "neither a duration"),
        ("３h", "neither a duration"),
    ],
)
def test_other_times_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_moment(text, NOW)


def test_the_window_is_whole_seconds_and_never_empty() -> None:
    assert parse_window("1h", None, NOW) == (int(NOW) - 3600, int(NOW))
    assert parse_window("2h", "1h", NOW) == (int(NOW) - 7200, int(NOW) - 3600)
    with pytest.raises(ValueError, match="after --until"):
        parse_window("1h", "2h", NOW)


def test_summary_json_and_lines() -> None:
    summary = Summary("stripe", int(NOW) - 60, int(NOW), seen=7, duplicate=2, recorded=3)
    summary.unattributed = 1
    summary.ignored.update({"setup_mode": 1})
    data = summary.as_json()
    assert data["seen"] == 7 and data["alreadyRecorded"] == 2 and data["newlyRecorded"] == 3
    assert data["ignored"] == 1 and data["ignoredByReason"] == {"setup_mode": 1}
    assert data["unattributed"] == 1 and data["error"] is None
    assert data["since"].endswith("Z") and json.loads(json.dumps(data)) == data
    text = "\n".join(summary.lines())
    for line in ("seen              7", "already recorded  2", "newly recorded    3"):
        assert line in text
    assert "setup_mode" in text and "unattributed      1" in text


def test_the_share_of_the_window_read_so_far() -> None:
    summary = Summary("stripe", 1000, 2000)
    assert summary.covered == 0.0
    summary.reached = 1750  # events come newest first
    assert summary.covered == 0.25
    summary.reached = 900
    assert summary.covered == 1.0


def test_throttle_spaces_calls_to_the_rate() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    throttle = Throttle(20, clock=lambda: clock[0], sleep=sleep)
    starts = []
    for _ in range(41):
        throttle.wait()
        starts.append(clock[0])
    assert starts[40] - starts[0] == pytest.approx(2.0)
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(starts, starts[1:], strict=False))
    clock[0] += 5  # idle: the next call goes at once
    throttle.wait()
    assert slept[-1] == pytest.approx(0.05)


def test_the_lock_expires_within_an_interval_and_a_minute() -> None:
    assert lock_ttl(2) == 5 and lock_ttl(30) == 30 and lock_ttl(900) == 60


def test_a_missing_key_names_the_variable() -> None:
    with pytest.raises(CredentialsError, match="STRIPE_API_KEY is not set"):
        StripeEvents(Settings.from_env({}))


def test_catchup_lists_exactly_the_types_the_mapping_maps() -> None:
    for name in stripe_fixture_names():
        event = stripe_fixture(name)
        mapped = map_stripe_event(event, recurring=True)
        unhandled = getattr(mapped, "reason", "") == "unhandled_event_type"
        assert (event["type"] in EVENT_TYPES) != unhandled, name


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[StripeAPI]:
    server = StripeAPI(KEY).start()
    yield server
    server.stop()


def test_an_event_read_through_the_sdk_maps_as_its_webhook_does(stripe_api: StripeAPI) -> None:
    """Every real sample of a mapped type, read back through the SDK from the stand-in, gives the
    same conversion (or the same reason to ignore it) as the signed webhook of the same event."""
    events = []
    for n, name in enumerate(stripe_fixture_names()):
        event = copy.deepcopy(stripe_fixture(name))
        if event["type"] in EVENT_TYPES:
            event["id"], event["created"] = f"evt_same_{n}", int(NOW) + n
            events.append(event)
    assert len(events) >= 5
    stripe_api.reset()
    stripe_api.add(events)
    settings = Settings.from_env({"STRIPE_API_KEY": KEY, "STRIPE_API_URL": stripe_api.url})
    source = StripeEvents(settings)
    listed = [e for page in source.pages(int(NOW), int(NOW) + 100) for e in page]
    assert {e.event_id for e in listed} == {e["id"] for e in events}
    for event in listed:
        body = stripe_body(next(e for e in events if e["id"] == event.event_id))
        webhook = verify_stripe_event(body, stripe_headers(body)["Stripe-Signature"], [SECRET], 300)
        assert event.body == webhook
        assert source.map(event) == map_stripe_event(webhook, recurring=True)


def test_the_stand_in_pages_as_stripe_documents(stripe_api: StripeAPI) -> None:
    stripe_api.reset()
    stripe_api.add(sample_events(5, start=1000, prefix="page"))
    stripe_api.delivered.add("evt_page_000001")
    first = stripe_api.page([("limit", "2")])
    assert [e["id"] for e in first["data"]] == ["evt_page_000004", "evt_page_000003"]
    assert first["has_more"]
    rest = stripe_api.page([("limit", "5"), ("starting_after", "evt_page_000003")])
    assert [e["id"] for e in rest["data"]] == [
        "evt_page_000002",
        "evt_page_000001",
        "evt_page_000000",
    ]
    assert not rest["has_more"]
    before = stripe_api.page([("limit", "1"), ("ending_before", "evt_page_000001")])
    assert [e["id"] for e in before["data"]] == ["evt_page_000002"] and before["has_more"]
    bounded = stripe_api.page([("created[gt]", "1001"), ("created[lte]", "1003")])
    assert [e["created"] for e in bounded["data"]] == [1003, 1002]
    failed = stripe_api.page([("delivery_success", "false"), ("types[0]", "invoice.paid")])
    assert failed["data"] == []
    ok = stripe_api.page([("delivery_success", "true")])
    assert [e["id"] for e in ok["data"]] == ["evt_page_000001"]
    for bad in ([("limit", "101")], [("starting_after", "evt_nope")], [("colour", "red")]):
        with pytest.raises(ValueError):
            stripe_api.page(bad)


def test_a_renewal_read_pages_before_its_checkout_is_attributed_from_it(
    stripe_api: StripeAPI, redis_url: str
) -> None:
    """Stripe lists newest first: the renewal is on the first page, its subscription's checkout
    (the oldest of 150 events) on the second. The run still sends the renewal with the
    checkout's session, remembered by the time it records the renewal (at the run's end)."""
    import redis

    from bridge.catchup.run import run_catchup
    from bridge.delivery.ledger import Ledger

    events = sample_events(150, start=int(NOW), prefix="order")
    oldest = events[0]["data"]["object"]
    oldest.update(subscription="sub_catchup_1", customer="cus_catchup_1")
    renewal = copy.deepcopy(stripe_fixture("pay__invoice.payment_failed.data.json"))
    renewal.update(id="evt_renewal_1", type="invoice.paid", created=int(NOW) + 200)
    invoice = renewal["data"]["object"]
    invoice.update(id="in_renewal_1", status="paid", amount_paid=1900, customer="cus_other")
    invoice.update(customer_email=None, customer_details=None)
    invoice["parent"]["subscription_details"]["subscription"] = "sub_catchup_1"
    stripe_api.reset()
    stripe_api.add([*events, renewal])
    settings = Settings.from_env({"STRIPE_API_KEY": KEY, "STRIPE_API_URL": stripe_api.url})
    ledger = Ledger(redis.Redis.from_url(redis_url))
    summary = run_catchup(StripeEvents(settings), ledger, int(NOW) - 1, int(NOW) + 300)
    assert (summary.pages, summary.recorded, summary.unattributed) == (2, 151, 0)
    payload = json.loads((ledger.get("in_renewal_1") or {})["payload"])
    assert payload["sessionId"] == "rcs_order_0"
    assert payload["metadata"]["attributedFrom"] == oldest["id"]
