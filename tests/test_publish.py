"""Who publishes a delivery task, and when the sweeper publishes one again (lua/enqueue.lua,
lua/sweep.lua) against a real Redis."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from bridge.delivery.keys import DUE, item_key
from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import BACKLOG, BATCH, MAX_QUEUED, PUBLISH_GRACE, QUEUE
from bridge.redis_client import redis_time


class Published(list[list[str]]):
    def __call__(self, ids: Sequence[str]) -> None:
        self.append(list(ids))


def record(ledger: Ledger, item: str) -> bool:
    return ledger.enqueue(item, f"rb:seen:test:{item}", {"kind": "conversion"})


def test_the_web_publishes_a_task_per_item_and_marks_it_published(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    published = Published()
    ledger = Ledger(client, publish=published)
    assert record(ledger, "cs_one") and not record(ledger, "cs_one")
    assert published == [["cs_one"]]  # once: a duplicate publishes nothing
    due = float(client.zscore(DUE, item_key("cs_one")) or 0)
    assert abs(due - (redis_time(client) + PUBLISH_GRACE)) < 1
    assert ledger.sweep(100) == ([], [])  # its task is on its way: nothing for the sweeper


def test_with_a_backlog_waiting_new_items_go_to_the_sweepers_batches(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush(QUEUE, *[b"a task"] * BACKLOG)
    published = Published()
    ledger = Ledger(client, publish=published)
    for n in range(10):
        assert record(ledger, f"cs_b{n}")
    assert published == []
    fresh, suspects = ledger.sweep(100)
    assert sorted(fresh) == sorted(f"cs_b{n}" for n in range(10)) and suspects == []
    client.ltrim(QUEUE, 0, BACKLOG - 2)  # one below: the web publishes again
    assert record(ledger, "cs_after") and published == [["cs_after"]]


def test_a_lost_message_is_published_again_once_the_queue_is_empty(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client, publish=Published())
    assert record(ledger, "cs_lost")
    client.zadd(DUE, {item_key("cs_lost"): redis_time(client) - 1})  # its grace ran out
    client.rpush(QUEUE, b"a task")  # messages still wait: its own is most likely among them
    assert ledger.sweep(100) == ([], [])
    assert float(client.zscore(DUE, item_key("cs_lost")) or 0) > redis_time(client) + 5
    client.zadd(DUE, {item_key("cs_lost"): redis_time(client) - 1})
    client.delete(QUEUE)  # the queue is empty and nothing took it: lost
    assert ledger.sweep(100) == (["cs_lost"], [])
    [claim] = ledger.claim(["cs_lost"], lease=30).claims
    assert ledger.claim(["cs_lost"], lease=30).words == {"cs_lost": "running"}  # sent twice
    assert ledger.mark_delivered(claim, {"status": "delivered"}, 0.1)
    assert ledger.claim(["cs_lost"], lease=30).words == {"cs_lost": "delivered"}


def test_a_failed_publish_is_logged_and_loses_nothing(redis_url: str, capsys) -> None:
    client = redis.Redis.from_url(redis_url)

    def broken(ids: Sequence[str]) -> None:
        raise ConnectionError("broker gone")

    ledger = Ledger(client, publish=broken)
    assert record(ledger, "cs_unsent")
    assert (ledger.get("cs_unsent") or {})["status"] == "pending"
    assert "publish_failed" in capsys.readouterr().out


def test_the_sweeper_fills_the_queue_no_further_than_its_bound(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client)  # no publisher: every item is the sweeper's
    for n in range(40):
        assert record(ledger, f"cs_q{n}")
    client.rpush(QUEUE, *[b"a task"] * (MAX_QUEUED - 2))  # room for two tasks of BATCH items
    fresh, _ = ledger.sweep(1000)
    assert len(fresh) == 2 * BATCH
    client.rpush(QUEUE, b"a task", b"a task")
    assert ledger.sweep(1000) == ([], [])  # full: the rest waits in the ledger, due
    client.delete(QUEUE)
    assert len(ledger.sweep(1000)[0]) == 40 - 2 * BATCH
