"""The Redis client every refbridge process uses: short timeouts, so outages fail fast."""

from __future__ import annotations

import os
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def connect(url: str, *, dedicated: bool = False) -> redis.Redis:
    """A client for `url`; a call fails within a few seconds when Redis is down or hung.

    `dedicated`: every command goes over one connection, opened on first use. For the web
    process, whose gunicorn sync workers serve one request at a time: it skips the pool's
    per-command checkout, readiness probe and return (30 µs of CPU per webhook: BENCHMARKS.md).
    Pipelines still take connections from the pool. Threads share the connection one command
    at a time, so while Redis hangs they wait for each other's timeouts: keep it to workers
    without threads.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 3,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }
    if dedicated:
        return _DedicatedRedis.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


class _DedicatedRedis(redis.Redis):
    """redis-py's single-connection client, connecting on first use instead of at once.

    `single_connection_client=True` connects in the constructor, which would stop the web from
    starting while Redis is down. This sets up what that mode sets up (the connection and the
    lock that serialises threads on it), lazily, and is stricter about the connection's state:
    it drops the connection after any failure but a Redis error reply (so no half-read reply is
    ever read as the next command's), and in a forked child. tests/test_redis_client.py holds
    it to redis-py.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection = self.connection_pool.make_connection()  # type: ignore[assignment]
        self._single_connection_client = True
        self._pid = os.getpid()

    def _execute_command(self, *args: Any, **options: Any) -> Any:
        connection = self.connection
        assert connection is not None
        if self._pid != os.getpid():
            connection.disconnect()  # type: ignore[no-untyped-call]  # the child's copy only
            self._pid = os.getpid()
        try:
            return super()._execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except redis.exceptions.ResponseError:
            raise  # Redis answered: the connection is in step
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()  # type: ignore[no-untyped-call]
        super().close()
