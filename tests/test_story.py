"""What `refbridge show` keeps of a payment stays bounded and says what it dropped
(bridge/delivery/story.py, lua/finish.lua), on a real Redis through the ledger's own calls."""

from __future__ import annotations

import time

import redis

from bridge.delivery import story
from bridge.delivery.ledger import Ledger
from bridge.ops import show


def retried(ledger: Ledger, item: str, times: int) -> None:
    """`times` attempts at `item`, each failing with a 503 and due again at once."""
    for _ in range(times):
        [claim] = ledger.claim([item], lease=30).claims
        number = int(claim.item["attempts"])
        entry = story.attempt_entry(number, time.time(), "retried", 503, "down", 0.01)
        assert ledger.schedule_retry(claim, 0, "", {}, "503 down", entry)


def test_only_the_latest_attempts_are_kept_and_the_rest_are_counted(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    ledger.enqueue("cs_many", "rb:seen:test:many", {"kind": "conversion", "payload": "{}"})
    retried(ledger, "cs_many", story.ATTEMPTS_KEPT + 5)
    told = show.story(ledger, "cs_many")
    assert told is not None
    assert [a["attempt"] for a in told["attempts"]] == list(range(6, story.ATTEMPTS_KEPT + 6))
    assert told["attemptsDropped"] == 5
    assert {a["status"] for a in told["attempts"]} == {503}
    assert "(5 older attempts not kept)" in show.render(told)
    ttl = ledger.redis.ttl(story.attempts_key("cs_many"))
    assert 0 < ttl <= story.STORY_TTL


def test_an_attempt_whose_worker_died_shows_as_never_finished(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    ledger.enqueue("cs_died", "rb:seen:test:died", {"kind": "conversion", "payload": "{}"})
    assert ledger.claim(["cs_died"], lease=-1).claims  # its worker died: the lease ran out
    retried(ledger, "cs_died", 1)
    told = show.story(ledger, "cs_died")
    assert told is not None
    assert [(a["attempt"], a["outcome"]) for a in told["attempts"]] == [
        (1, "never_finished"),
        (2, "retried"),
    ]


def test_a_story_keeps_its_latest_events_only(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for n in range(story.EVENTS_KEPT + 3):
        entry = story.event_entry("stripe", f"evt_{n}", "invoice.paid", time.time())
        story.tell(client, "in_busy", {**entry, "outcome": "ignored"}, [f"evt_{n}"])
    told = show.story(Ledger(client), "evt_7")
    assert told is not None and told["state"] == "ignored"
    assert len(told["events"]) == story.EVENTS_KEPT
    assert told["events"][0]["eventId"] == "evt_3"
    assert 0 < client.ttl(story.id_key("evt_7")) <= story.STORY_TTL


def test_an_id_nobody_recorded_finds_nothing(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    assert show.story(ledger, "pi_nobody") is None
    assert show.story(ledger, "") is None
    assert show.story(ledger, "x" * 300) is None
