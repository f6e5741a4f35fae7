"""The sweeper: a thread in each worker's main process that dispatches due ledger items.

It is what makes retries happen on time and what recovers items whose task message was lost
(a worker killed with SIGKILL, a message dropped while Redis restarted): their lease runs out,
they become due, and the next sweep (every second) sends them again. Several workers may
sweep at once; the claim is one atomic script, so each item goes to exactly one of them.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from celery import Celery, bootsteps

from bridge.intake import QUEUED_LEASE
from bridge.redis_client import REDIS_ERRORS

INTERVAL = 1.0
BATCH = 200
log = structlog.get_logger("refbridge.sweeper")


def sweep_once(app: Celery) -> int:
    """Claim due items and queue a task for each; how many were queued."""
    from tasks.app import current_worker

    claims = current_worker(app).ledger.dispatch_due(QUEUED_LEASE, BATCH)
    if claims:
        log.info("swept", dispatched=len(claims))
    return len(claims)


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
                while sweep_once(app) >= BATCH and not self._stop.is_set():
                    pass
            except REDIS_ERRORS as exc:
                log.warning("sweep_failed", error=type(exc).__name__)
            except Exception:  # noqa: BLE001 — the sweeper must outlive any one bad sweep
                log.exception("sweep_crashed")


def install(app: Celery) -> None:
    """Add the sweeper to `app`'s workers."""
    app.steps["worker"].add(Sweeper)
