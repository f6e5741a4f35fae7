"""REDIS_MIN_REPLICAS: a record is confirmed by WAIT on a real replica before the web answers
200 (bridge/delivery/replicas.py), on two real redis-servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.delivery.ledger import Ledger
from bridge.delivery.replicas import Replicas, ReplicasBehind
from bridge.ops.embedded_redis import EmbeddedRedis
from tests.waiting import wait_until


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    primary = EmbeddedRedis(tmp_path / "primary").start()
    replica = EmbeddedRedis(tmp_path / "replica").start()
    try:
        follow(primary, replica)
        yield primary, replica
    finally:  # SIGKILL: a primary with a replica waits out its shutdown otherwise
        replica.kill()
        primary.kill()


def follow(primary: EmbeddedRedis, replica: EmbeddedRedis) -> None:
    redis.Redis(port=replica.port).replicaof("127.0.0.1", primary.port)
    wait_until(
        lambda: redis.Redis(port=primary.port).info("replication")["connected_slaves"] == 1,
        what="the replica attached",
    )


def record(ledger: Ledger, n: int) -> bool:
    return ledger.enqueue(f"cs_{n}", f"rb:seen:test:{n}", {"kind": "conversion"})


def test_a_record_waits_for_its_replica(pair: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    primary, replica = pair
    ledger = Ledger(redis.Redis(port=primary.port), replicas=Replicas(1, 0.5))
    assert record(ledger, 1)
    assert redis.Redis(port=replica.port).exists("rb:item:cs_1")  # on the replica already
    assert not record(ledger, 1)  # a duplicate waits too, and is still a duplicate


def test_no_replica_in_time_refuses(pair: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    primary, replica = pair
    ledger = Ledger(redis.Redis(port=primary.port), replicas=Replicas(1, 0.3))
    redis.Redis(port=replica.port).replicaof("NO", "ONE")  # the replica leaves
    wait_until(
        lambda: redis.Redis(port=primary.port).info("replication")["connected_slaves"] == 0,
        what="the replica gone",
    )
    started = time.monotonic()
    with pytest.raises(ReplicasBehind):
        record(ledger, 2)
    assert time.monotonic() - started < 1.5  # within REDIS_WAIT_TIMEOUT, not much more
    assert isinstance(ReplicasBehind(), redis.exceptions.ConnectionError)  # the web's 503
    # Without the requirement the same Redis records at once.
    assert record(Ledger(redis.Redis(port=primary.port)), 3)
    follow(primary, replica)  # back: 200s again
    assert record(ledger, 4)


def test_a_primary_that_never_ran_the_script_loads_it(
    pair: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    primary, _ = pair
    client = redis.Redis(port=primary.port)
    ledger = Ledger(client, replicas=Replicas(1, 0.5))
    client.script_flush()  # as on a replica promoted by a failover
    assert record(ledger, 5)
    assert client.exists("rb:item:cs_5")
