"""What each worker process keeps for its attempts: made after fork, once per process."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from bridge.delivery.attempts import Worker
from bridge.delivery.http_client import new_session
from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import BATCH, publisher
from bridge.redis_client import client_for
from config import Settings

_local: dict[str, Any] = {}
_lock = threading.Lock()
# Pool processes are forked from the main process while its threads (the sweeper, the
# watchdog) may hold this lock; a child must not start with it held forever.
os.register_at_fork(after_in_child=_lock._at_fork_reinit)  # type: ignore[attr-defined]


def current_worker(app: Celery) -> Worker:
    """This process's Worker: Redis client and HTTP session made after fork, once per pid."""
    with _lock:
        if _local.get("pid") != os.getpid():
            settings: Settings = app.conf.refbridge_settings
            _local["worker"] = Worker(
                ledger=Ledger(
                    client_for(settings, watched=True),
                    settings.attribution_memory_days,
                    publisher(settings).deliver,
                ),
                session=new_session(pool_size=BATCH),
                settings=settings,
                threads=ThreadPoolExecutor(max_workers=BATCH, thread_name_prefix="attempt"),
            )
            _local["pid"] = os.getpid()
        worker: Worker = _local["worker"]
        return worker
