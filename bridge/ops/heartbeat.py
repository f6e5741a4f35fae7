"""Which Celery workers are alive: each beats into one Redis sorted set, /metrics counts them.

Every worker's sweeper thread (tasks/sweeper.py) writes its member (`<nodename> <pid>`) with
Redis's time as score every BEAT_EVERY seconds, and takes its member out on a warm shutdown.
`refbridge_workers` counts the members seen within SEEN_WITHIN seconds, so a worker killed
outright (SIGKILL, OOM, its machine gone) stops counting a minute later; stale members are
pruned by every beat.
"""

from __future__ import annotations

import os

import redis

from bridge.redis_client import redis_time

WORKERS = "rb:workers"
BEAT_EVERY = 5.0
# A worker not seen this long is gone: many missed beats, not one slow sweep.
SEEN_WITHIN = 60.0


def member(hostname: str) -> str:
    """This process's member of WORKERS: its Celery nodename and pid (two workers may share a
    nodename on one machine)."""
    return f"{hostname} {os.getpid()}"


def beat(client: redis.Redis, hostname: str) -> None:
    """Say that this worker is alive now; forget the workers that stopped beating."""
    now = redis_time(client)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {member(hostname): now})
    pipe.zremrangebyscore(WORKERS, "-inf", now - SEEN_WITHIN)
    pipe.execute()


def leave(client: redis.Redis, hostname: str) -> None:
    """This worker stops: it no longer counts."""
    client.zrem(WORKERS, member(hostname))
