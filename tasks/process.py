"""The one Celery task: claim due ledger items and run an attempt at each."""

from __future__ import annotations

import structlog
from celery import Celery

from bridge.dispatch import PROCESS_TASK
from bridge.processing import process_due


def register(app: Celery) -> None:
    """Register `refbridge.process_due` on `app`."""

    @app.task(name=PROCESS_TASK, ignore_result=True)
    def process() -> int:
        from tasks.app import current_worker

        structlog.contextvars.clear_contextvars()
        return process_due(current_worker(app))
