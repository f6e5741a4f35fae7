"""The automatic catch-up's lock and schedule against a real Redis: one holder at a time, kept
while its holder lives, freed by its expiry when the holder dies; one run per interval."""

from __future__ import annotations

import time

import redis

from bridge.catchup.schedule import LOCK, STARTED, RunLock, claim_run


def test_one_holder_at_a_time_and_once_per_interval(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = claim_run(client, "stripe", 2)
    assert first is not None
    assert claim_run(client, "stripe", 2) is None  # started within the interval
    client.delete(STARTED.format(provider="stripe"))
    assert claim_run(client, "stripe", 2) is None  # due, but the lock is held
    first.release()
    client.set(STARTED.format(provider="stripe"), time.time())
    assert claim_run(client, "stripe", 2) is None  # released, but one ran within the interval
    client.set(STARTED.format(provider="stripe"), time.time() - 2.1)
    second = claim_run(client, "stripe", 2)
    assert second is not None
    second.release()
    assert client.get(LOCK) is None


def test_a_live_holder_keeps_the_lock_and_a_dead_one_loses_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    holder = RunLock(client, ttl=0.6)
    assert holder.acquire()
    time.sleep(1.5)  # more than twice the expiry: renewed meanwhile
    assert not RunLock(client, ttl=0.6).acquire()
    assert client.get(LOCK) == holder.token.encode() and not holder.lost
    holder._stop.set()  # the holder dies without releasing: nothing renews its lock
    deadline = time.monotonic() + 3
    while client.get(LOCK) is not None:
        assert time.monotonic() < deadline, "a dead holder's lock never expired"
        time.sleep(0.05)
    other = RunLock(client, ttl=0.6)
    assert other.acquire()
    holder.release()  # a late release by the old holder must not free the new holder's lock
    assert client.get(LOCK) == other.token.encode()
    other.release()
