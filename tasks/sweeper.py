"""The sweeper: a thread in each worker's main process that nudges workers about due items.

It also trims the attribution memory of entries nobody used for ATTRIBUTION_MEMORY_DAYS, a few
buckets each sweep (bridge/delivery/memory.py): every bucket about every quarter of an hour.

It is what makes retries happen on time and what recovers work whose nudge was lost (a worker
killed with SIGKILL, a message dropped while Redis restarted) or whose worker died mid-attempt
(the claim's lease runs out and the item is due again): every second it queues enough nudges
for the items that are due. Several workers may sweep at once; claims are atomic, so each
item goes to exactly one attempt at a time.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import structlog
from celery import Celery, bootsteps

from bridge.delivery.attempts import BATCH
from bridge.redis_client import REDIS_ERRORS, reachability
from tasks.resources import current_worker

INTERVAL = 1.0
# 16384 buckets, 16 a sweep: a whole pass in about 17 minutes, fewer with several workers.
TRIM_BUCKETS = 16
log = structlog.get_logger("refbridge.sweeper")


def sweep_once(app: Celery) -> int:
    """Queue enough nudges for the items that are due, then trim memory; how many were queued."""
    ledger = current_worker(app).ledger
    nudged = ledger.nudge(BATCH)
    try:
        ledger.memory.trim(TRIM_BUCKETS)
    except redis.exceptions.ResponseError as exc:  # an error answer, not an outage: say it
        log.warning("memory_trim_failed", error=str(exc)[:200])
    if nudged:
        log.info("swept", nudges=nudged)
    return nudged


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
        while not self._stop.wait(INTERVAL):
            try:
                sweep_once(app)
            except REDIS_ERRORS as exc:
                # Logged once per outage (and its end), not once a second; sweep again soon.
                reachability(app.conf.refbridge_settings.redis_url).failed(exc)
            except Exception:  # noqa: BLE001 — the sweeper must outlive any one bad sweep
                log.exception("sweep_crashed")


def install(app: Celery) -> None:
    """Add the sweeper to `app`'s workers."""
    app.steps["worker"].add(Sweeper)
