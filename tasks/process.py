"""The one Celery task: run an attempt at a ledger item."""

from __future__ import annotations

import structlog
from celery import Celery

from bridge.dispatch import PROCESS_TASK
from bridge.ledger import Claim
from bridge.processing import process_item


def register(app: Celery) -> None:
    """Register `refbridge.process_item` on `app`."""

    @app.task(name=PROCESS_TASK, ignore_result=True)
    def process(item_id: str, token: str) -> str:
        from tasks.app import current_worker

        structlog.contextvars.clear_contextvars()
        return process_item(current_worker(app), Claim(item_id, token))
