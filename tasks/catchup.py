"""Automatic catch-up: a thread in each worker's main process, started when CATCHUP_INTERVAL
is set. Every second it asks whether a run is due (one Redis GET); the run itself happens in
one worker at a time (bridge/catchup/schedule.py).

A thread rather than a task the sweeper queues: a run lasts minutes over a large window and
would hold a pool process that deliveries need, and a task could sit behind a backlog of
deliveries; the Redis lock, not Celery, decides which worker runs it.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from celery import Celery, bootsteps

from bridge.catchup.auto import configured_providers, run_if_due
from bridge.redis_client import REDIS_ERRORS, reachability_for
from config import Settings
from tasks.resources import current_worker

TICK = 1.0
log = structlog.get_logger("refbridge.catchup")


class CatchUp(bootsteps.StartStopStep):
    """Runs `run_if_due` every TICK seconds while the worker runs."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()

    def start(self, parent: Any) -> None:
        app = parent.app
        settings: Settings = app.conf.refbridge_settings
        if not settings.catchup_interval:
            return
        if not configured_providers(settings):
            log.info(
                "catchup_off",
                reason="neither STRIPE_API_KEY nor PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET and "
                "PAYPAL_WEBHOOK_ID are set",
            )
            return
        thread = threading.Thread(target=self._loop, args=(app,), name="catchup", daemon=True)
        thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()

    def _loop(self, app: Celery) -> None:
        settings: Settings = app.conf.refbridge_settings
        while not self._stop.wait(TICK):
            try:
                run_if_due(settings, current_worker(app).ledger)
            except REDIS_ERRORS as exc:
                reachability_for(settings).failed(exc)
            except Exception:  # noqa: BLE001 — catch-up must outlive any one bad run
                log.exception("catchup_crashed")


def install(app: Celery) -> None:
    """Add automatic catch-up to `app`'s workers."""
    app.steps["worker"].add(CatchUp)
