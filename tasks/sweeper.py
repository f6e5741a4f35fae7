"""The sweeper: a thread in each worker's main process that publishes tasks for due items.

The web publishes a task for each item it records; the sweeper publishes for due work nobody
took. It is what makes retries happen on time (the ledger, not a Celery ETA, says when), runs
replays, and recovers work whose message was lost (a crash between record and publish, a
worker killed with SIGKILL holding messages it had not started) or whose worker died
mid-attempt (the claim's lease runs out and the item is due again): every second it publishes
a task for each BATCH of fresh due items, and one for each suspect alone. Several workers may
sweep at once: the sweep script marks what it hands out, so each item is published once.

It also trims the attribution memory of entries nobody used for ATTRIBUTION_MEMORY_DAYS, a few
buckets each sweep (bridge/delivery/memory.py): every bucket about every quarter of an hour.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import structlog
from celery import Celery, bootsteps

from bridge.delivery.publish import BATCH
from bridge.redis_client import REDIS_ERRORS, reachability
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
    """Runs `sweep_once` every INTERVAL seconds while the worker runs."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        app = parent.app
        self._thread = threading.Thread(target=self._loop, args=(app,), name="sweeper", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()

    def _loop(self, app: Celery) -> None:
        # At once, then every INTERVAL: a worker that starts on a backlog feeds it from the start.
        while True:
            try:
                sweep_once(app)
            except REDIS_ERRORS as exc:
                # Logged once per outage (and its end), not once a second; sweep again soon.
                reachability(app.conf.refbridge_settings.redis_url).failed(exc)
            except Exception:  # noqa: BLE001 — the sweeper must outlive any one bad sweep
                log.exception("sweep_crashed")
            if self._stop.wait(INTERVAL):
                return


def install(app: Celery) -> None:
    """Add the sweeper to `app`'s workers."""
    app.steps["worker"].add(Sweeper)
