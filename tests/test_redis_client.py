"""The web's dedicated Redis connection, held to what redis-py's own single-connection mode does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from bridge.embedded_redis import EmbeddedRedis
from bridge.redis_client import connect


@pytest.fixture()
def own_redis(tmp_path: Path):
    server = EmbeddedRedis(tmp_path / "redis")
    yield server
    server.stop()


def test_it_starts_while_redis_is_down_and_connects_on_first_use(own_redis: EmbeddedRedis):
    client = connect(own_redis.url, dedicated=True)  # nothing listens yet
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    own_redis.start()
    assert client.ping()


def test_every_command_uses_the_one_connection(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url, dedicated=True)
    ids = {client.client_id() for _ in range(5)}
    assert len(ids) == 1
    assert client.connection_pool._in_use_connections == set()  # noqa: SLF001
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(keys=["n"], args=[2]) == 2
    pipe = client.pipeline()
    pipe.incr("n").get("n")
    assert pipe.execute() == [3, b"3"]  # pipelines use the pool
    assert {client.client_id()} == ids


def test_it_reconnects_after_redis_restarts(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url, dedicated=True)
    client.set("k", "v")
    own_redis.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get("k")
    own_redis.start()
    assert client.get("k") == b"v"  # reconnected; the AOF kept the key


def test_threads_share_it_safely(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url, dedicated=True)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                client.incr("shared")
                client.set("scratch", "x" * 2000)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert client.get("shared") == b"1600"
