"""Suspects (items whose worker died under them) never hold back fresh work: each runs in a
task of its own, one at a time in the system; one that finds the slot taken waits out of the
way, and is due again the moment the running one ends (issue 23, finding 1)."""

from __future__ import annotations

import redis

from bridge.delivery.keys import DUE, item_key
from bridge.delivery.ledger import Ledger
from bridge.redis_client import redis_time

SUSPECTS = 70  # more than a claim used to look through (64), which then held fresh work back


def suspects_and_fresh(ledger: Ledger) -> list[str]:
    ids = [f"suspect_{n}" for n in range(SUSPECTS)]
    for n, item in enumerate(ids):
        ledger.enqueue(item, f"rb:seen:test:s{n}", {"kind": "conversion"})
    # Their worker died: leases that ended at once, each attempt never finished.
    for start in range(0, SUSPECTS, 8):
        assert len(ledger.claim(ids[start : start + 8], lease=-1).claims) == len(ids[start:][:8])
    ledger.enqueue("fresh", "rb:seen:test:fresh", {"kind": "conversion"})
    return ids


def test_fresh_work_is_taken_while_more_suspects_wait_than_a_claim_scanned(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    ids = suspects_and_fresh(ledger)
    fresh, suspects = ledger.sweep(1000)
    assert fresh == ["fresh"] and sorted(suspects) == sorted(ids)
    [taken] = ledger.claim(["fresh"], lease=30).claims  # not behind any of them
    assert taken.item_id == "fresh" and taken.died_in == ""
    [alone] = ledger.claim([ids[0]], lease=30).claims  # one suspect, alone in the system
    assert alone.died_in == "batch"
    # The others wait out of the way: until the running one's lease ends at the latest.
    for item in ids[1:]:
        assert ledger.claim([item], lease=30).words == {item: "waiting"}
    lease_end = float(client.zscore(DUE, item_key(ids[0])) or 0)
    waiting = {float(client.zscore(DUE, item_key(item)) or 0) for item in ids[1:]}
    assert waiting == {lease_end} and lease_end > redis_time(client) + 25


def test_a_suspect_is_claimed_only_alone(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    ids = suspects_and_fresh(ledger)
    claimed = ledger.claim([ids[0], "fresh"], lease=30)
    assert [c.item_id for c in claimed.claims] == ["fresh"]
    assert claimed.words == {ids[0]: "suspect"}


def test_the_next_suspect_runs_as_soon_as_the_one_before_ends(redis_url: str) -> None:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    ids = suspects_and_fresh(ledger)
    ledger.sweep(1000)
    [alone] = ledger.claim([ids[0]], lease=30).claims
    assert ledger.claim([ids[1]], lease=30).words == {ids[1]: "waiting"}
    assert ledger.mark_delivered(alone, {"status": "delivered"}, 0.1)  # ends well before its lease
    fresh, suspects = ledger.sweep(1000)  # published again at once, not in 30 s
    assert (fresh, suspects) == ([], [ids[1]])
    [after] = ledger.claim([ids[1]], lease=30).claims
    assert after.died_in == "batch"
