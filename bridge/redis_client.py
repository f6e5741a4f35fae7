"""The Redis client every refbridge process uses: short timeouts, so outages fail fast."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def connect(url: str) -> redis.Redis:
    """A client for `url`; a call fails within a few seconds when Redis is down or hung."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=3,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
