"""Suspects (items whose worker died under them) never hold back fresh work: they run one at a
time, a claim that meets them while one runs puts them back out of the way, and they are due
again the moment the running one ends (issue 23, finding 1)."""

from __future__ import annotations

import redis

from bridge.delivery.ledger import DUE, SCAN_PER_ITEM, Ledger, item_key
from bridge.redis_client import redis_time

BATCH = 8
SUSPECTS = BATCH * SCAN_PER_ITEM + 6  # more than one claim looks through


def suspects_and_fresh(ledger: Ledger) -> None:
    for n in range(SUSPECTS):
        ledger.enqueue(f"suspect_{n}", f"rb:seen:test:s{n}", {"kind": "conversion"})
    # Their worker died: leases that ended at once, each attempt never finished.
    assert len(ledger.claim(lease=-1, limit=SUSPECTS).claims) == SUSPECTS
    ledger.enqueue("fresh", "rb:seen:test:fresh", {"kind": "conversion"})


def test_fresh_work_behind_more_suspects_than_a_claim_scans_is_taken(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    suspects_and_fresh(ledger)
    [alone] = ledger.claim(lease=30, limit=BATCH).claims  # one suspect, alone in the system
    assert alone.died_in == "batch"
    taken = ledger.claim(lease=30, limit=BATCH).claims
    assert [c.item_id for c in taken] == ["fresh"]
    # The other suspects wait out of the way: until the running one's lease ends at the latest.
    lease_end = float(client.zscore(DUE, item_key(alone.item_id)) or 0)
    waiting = [float(client.zscore(DUE, item_key(f"suspect_{n}")) or 0) for n in range(SUSPECTS)]
    assert set(waiting) == {lease_end} and lease_end > redis_time(client) + 25


def test_the_next_suspect_runs_as_soon_as_the_one_before_ends(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)
    suspects_and_fresh(ledger)
    [alone] = ledger.claim(lease=30, limit=BATCH).claims
    assert [c.item_id for c in ledger.claim(lease=30, limit=BATCH).claims] == ["fresh"]
    assert ledger.mark_delivered(alone, {"status": "delivered"}, 0.1)  # ends well before its lease
    [after] = ledger.claim(lease=30, limit=BATCH).claims  # the next suspect, not in 30 s
    assert after.died_in == "batch" and after.item_id != alone.item_id
