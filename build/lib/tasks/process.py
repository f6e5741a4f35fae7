"""The one Celery task: claim due ledger items and run an attempt at each."""

from __future__ import annotations

import structlog
from celery import Celery

from bridge.delivery.attempts import process_due
from bridge.delivery.nudges import PROCESS_TASK
from tasks.resources import current_worker


def register(app: Celery) -> None:
    """Register `refbridge.process_due` on `app`."""

    @app.task(name=PROCESS_TASK, ignore_result=True)
    def process() -> int:
        structlog.contextvars.clear_contextvars()
        return process_due(current_worker(app))
