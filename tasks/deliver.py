"""The one delivery task: `refbridge.deliver(item_ids)` runs an attempt at each item it names."""

from __future__ import annotations

import structlog
from celery import Celery

from bridge.delivery.attempts import attempt
from bridge.delivery.publish import DELIVER_TASK
from tasks.resources import current_worker


def register(app: Celery) -> None:
    """Register `refbridge.deliver` on `app`."""

    @app.task(name=DELIVER_TASK, ignore_result=True)
    def deliver(item_ids: list[str]) -> dict[str, str]:
        """A word per item (delivered, retried, dead_lettered, running, ...): what Flower and
        the task's events show as its result."""
        structlog.contextvars.clear_contextvars()
        return attempt(current_worker(app), item_ids)
