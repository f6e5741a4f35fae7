"""The ledger's side of listeners, on a real Redis: registration by an empty claim, the intake's
bell instead of a nudge, and keys that never outlast the listeners."""

from __future__ import annotations

import time

import redis

from bridge.delivery.ledger import (
    BELL,
    LISTEN_KEYS_TTL_MS,
    LISTEN_SLACK,
    LISTEN_WAIT,
    LISTENERS,
    NUDGES,
    Ledger,
)
from bridge.delivery.nudges import QUEUE

FIELDS = {"kind": "conversion", "payload": "{}"}


def _ledger(redis_url: str) -> tuple[redis.Redis, Ledger]:
    client = redis.Redis.from_url(redis_url)  # flushed by the fixture
    return client, Ledger(client)


def test_an_empty_claim_registers_the_listener_and_the_next_item_rings_it(redis_url):
    client, ledger = _ledger(redis_url)
    assert ledger.claim(lease=30, limit=8, listener="L1").claims == []
    assert client.zrange(LISTENERS, 0, -1) == [b"L1"]
    assert ledger.enqueue("cs_listen_1", "rb:seen:test:listen_1", FIELDS)
    assert client.llen(QUEUE) == 0 and client.get(NUDGES) is None  # no Celery message
    assert client.zcard(LISTENERS) == 0  # rung once: taken off the list
    assert not ledger.wait_for_bell("L2", timeout=0.1)  # nobody else's
    assert ledger.wait_for_bell("L1", timeout=0.1)
    assert not ledger.wait_for_bell("L1", timeout=0.1)
    # With nobody listening the next item gets a nudge, as before listeners.
    assert ledger.enqueue("cs_listen_2", "rb:seen:test:listen_2", FIELDS)
    assert client.llen(QUEUE) == 1


def test_a_claim_that_takes_work_unregisters_the_listener(redis_url):
    client, ledger = _ledger(redis_url)
    ledger.claim(lease=30, limit=8, listener="L1")
    ledger.claim(lease=30, limit=8, listener="L2")
    assert ledger.enqueue("cs_listen_3", "rb:seen:test:listen_3", FIELDS)  # rings one of them
    assert ledger.enqueue("cs_listen_4", "rb:seen:test:listen_4", FIELDS)  # and the other
    # Each rung on its own bell: a bell heard by another listener would leave the one taken
    # off the list waiting unregistered.
    assert client.llen(BELL + "L1") == client.llen(BELL + "L2") == 1
    assert client.llen(QUEUE) == 0
    ledger.claim(lease=30, limit=8, listener="L1")  # L1 takes both...
    ledger.claim(lease=30, limit=8, listener="L2")  # ...so L2 finds nothing and waits again
    assert client.zrange(LISTENERS, 0, -1) == [b"L2"]
    assert ledger.enqueue("cs_listen_5", "rb:seen:test:listen_5", FIELDS)
    assert ledger.claim(lease=30, limit=8, listener="L2").claims  # busy: unregistered
    assert client.zcard(LISTENERS) == 0
    assert ledger.enqueue("cs_listen_6", "rb:seen:test:listen_6", FIELDS)
    assert client.llen(QUEUE) == 1  # a busy listener is never rung


def test_a_lapsed_registration_is_never_rung(redis_url):
    client, ledger = _ledger(redis_url)
    client.zadd(LISTENERS, {"gone": time.time() - 1})  # a listener that died waiting
    assert ledger.enqueue("cs_listen_7", "rb:seen:test:listen_7", FIELDS)
    assert not client.exists(BELL + "gone") and client.llen(QUEUE) == 1
    assert client.zcard(LISTENERS) == 0  # swept by the intake


def test_a_duplicate_rings_nobody(redis_url):
    client, ledger = _ledger(redis_url)
    assert ledger.enqueue("cs_listen_8", "rb:seen:test:listen_8", FIELDS)
    client.delete(QUEUE, NUDGES)
    ledger.claim(lease=30, limit=8, listener="L1")  # takes the item: not registered
    ledger.claim(lease=30, limit=8, listener="L1")  # nothing left: registered
    assert not ledger.enqueue("cs_listen_8", "rb:seen:test:listen_8", FIELDS)
    assert client.zrange(LISTENERS, 0, -1) == [b"L1"] and not client.exists(BELL + "L1")


def test_the_listening_keys_expire_and_unlisten_removes_a_listener(redis_url):
    client, ledger = _ledger(redis_url)
    ledger.claim(lease=30, limit=8, listener="L1")
    ledger.claim(lease=30, limit=8, listener="L2")
    assert 0 < client.pttl(LISTENERS) <= LISTEN_KEYS_TTL_MS
    ledger.unlisten("L1")
    assert client.zrange(LISTENERS, 0, -1) == [b"L2"]
    assert ledger.enqueue("cs_listen_9", "rb:seen:test:listen_9", FIELDS)
    assert 0 < client.pttl(BELL + "L2") <= LISTEN_KEYS_TTL_MS


def test_a_claim_without_a_listener_touches_no_registration(redis_url):
    client, ledger = _ledger(redis_url)
    ledger.claim(lease=30, limit=8)
    assert not client.exists(LISTENERS)


def test_a_registration_lapses_by_redis_clock_not_the_workers(redis_url):
    client, ledger = _ledger(redis_url)
    ledger.claim(lease=30, limit=8, listener="L1")
    [(_, lapses)] = client.zrange(LISTENERS, 0, -1, withscores=True)
    seconds, micros = client.time()
    assert abs(lapses - (seconds + micros / 1e6 + LISTEN_WAIT + LISTEN_SLACK)) < 0.5


def test_a_listeners_claim_takes_no_suspect(redis_url):
    client, ledger = _ledger(redis_url)
    assert ledger.enqueue("cs_listen_s", "rb:seen:test:listen_s", FIELDS)
    [claim] = ledger.claim(lease=-1, limit=8).claims  # its lease ends at once: as if it died
    assert client.hget("rb:item:cs_listen_s", "in_flight") == b"batch"
    assert ledger.claim(lease=30, limit=8, listener="L1", alone=False).claims == []
    assert client.zrange(LISTENERS, 0, -1) == [b"L1"]  # nothing it may take: it waits
    [suspect] = ledger.claim(lease=30, limit=8).claims  # a task's claim takes it, alone
    assert suspect.item_id == claim.item_id and suspect.died_in == "batch"
