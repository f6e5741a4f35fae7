"""The sweeper: a thread in each worker's main process that publishes tasks for due items.

The web publishes a task for each item it records; the sweeper publishes for due work nobody
took. It is what makes retries happen on time (the ledger, not a Celery ETA, says when), runs
replays, and recovers work whose message was lost (a crash between record and publish, a
worker killed with SIGKILL holding messages it had not started) or whose worker died
mid-attempt (the claim's lease runs out and the item is due again): every second it publishes
a task for each BATCH of fresh due items, and one for each suspect alone. Several workers may
sweep at once: the sweep script marks what it hands out, so each item is published once.

It also trims the attribution memory of entries nobody used for ATTRIBUTION_MEMORY_DAYS, a few
buckets each sweep (bridge/delivery/memory.py): every bucket about every quarter of an hour;
and every BEAT_EVERY seconds it says that its worker is alive (bridge/ops/heartbeat.py: the
`refbridge_workers` gauge).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from celery import Celery, bootsteps

from bridge.delivery.publish import BATCH
from bridge.ops import heartbeat
from bridge.redis_client import REDIS_ERRORS, reachability_for
from tasks.resources import current_worker

INTERVAL = 1.0
# Due items handed out per sweep, at most; a full sweep is followed by another at once, until
# the queue holds MAX_QUEUED tasks (bridge/delivery/publish.py).
SWEEP_LIMIT = 100 * BATCH
# 16384 buckets, 16 a sweep: a whole pass in about 17 minutes, fewer with several workers.
TRIM_BUCKETS = 16
log = structlog.get_logger("refbridge.sweeper")


def sweep_once(app: Celery) -> int:
    """Publish tasks for the items due that no task has taken (again at once while a sweep
    finds as many as it may take), then trim memory; how many tasks were published."""
    ledger = current_worker(app).ledger
    tasks = 0
    while True:
        fresh, suspects = ledger.sweep(SWEEP_LIMIT)
        published = ledger.publish(fresh)  # BATCH to a task
        published += sum(ledger.publish([suspect]) for suspect in suspects)  # each alone
        if published:
            log.info("swept", items=len(fresh), suspects=len(suspects), tasks=published)
        tasks += published
        if len(fresh) + len(suspects) < SWEEP_LIMIT:
            break
    try:
        ledger.memory.trim(TRIM_BUCKETS)
    except redis.exceptions.ResponseError as exc:  # an error answer, not an outage: say it
        log.warning("memory_trim_failed", error=str(exc)[:200])
    return tasks


class Sweeper(bootsteps.StartStopStep):
    """Runs `sweep_once` every INTERVAL seconds while the worker runs, and beats every
    BEAT_EVERY."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        args = (parent.app, parent.hostname)
        self._thread = threading.Thread(target=self._loop, args=args, name="sweeper", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(INTERVAL)  # so that no beat of its own comes after the leave
        try:  # a warm shutdown: the worker stops counting at once, not a minute later
            heartbeat.leave(current_worker(parent.app).ledger.redis, parent.hostname)
        except redis.exceptions.RedisError:
            pass  # Redis is away or refused: the member goes stale by itself

    def _loop(self, app: Celery, hostname: str) -> None:
        # At once, then every INTERVAL: a worker that starts on a backlog feeds it from the start.
        last_beat = -heartbeat.BEAT_EVERY
        while True:
            if time.monotonic() - last_beat >= heartbeat.BEAT_EVERY:
                last_beat = time.monotonic()  # a sweep that crashes stops no beat
                client = current_worker(app).ledger.redis
                _guarded(app, "heartbeat_failed", heartbeat.beat, client, hostname)
            _guarded(app, "sweep_crashed", sweep_once, app)
            if self._stop.wait(INTERVAL):
                return


def _guarded(app: Celery, failed: str, step: Callable[..., object], *args: Any) -> None:
    """Run one step of the loop; the sweeper must outlive any one failure (logged as `failed`,
    with its traceback)."""
    try:
        step(*args)
    except REDIS_ERRORS as exc:
        # Logged once per outage (and its end), not once a second; tried again soon.
        reachability_for(app.conf.refbridge_settings).failed(exc)
    except Exception:  # noqa: BLE001 — the sweeper must outlive any one bad sweep
        log.exception(failed)


def install(app: Celery) -> None:
    """Add the sweeper to `app`'s workers."""
    app.steps["worker"].add(Sweeper)
