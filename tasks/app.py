"""Celery wiring in one place: the app, its configuration and per-process resources."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import celery.apps.worker as celery_worker
from celery import Celery, signals
from celery.worker.consumer import consumer as celery_consumer

from bridge.delivery.publish import QUEUE, broker_of
from bridge.logs import configure_logging
from bridge.ops.readiness import WORKER_READY_TTL, worker_ready_key
from bridge.redis_client import REDIS_ERRORS, Reachability, client_for, reachability_for
from config import Settings
from tasks import catchup, deliver, sweeper, watchdog

# Celery's own INFO line per task ("Task … received" in the main process, "… succeeded in …"
# in the pool process): two lines per delivery that add nothing to its `attempt_finished` line
# (Flower and task events show each task and its result). Their warnings and errors (a task
# that raised) are still logged.
_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _configure_logging() -> None:
    configure_logging()
    for name in _PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def make_celery(settings: Settings) -> Celery:
    """The worker's Celery app for `settings` (REDIS_URL and REFCAMPAIGN_API_KEY required)."""
    _configure_logging()  # before the worker starts: its start-up warnings become JSON too
    settings.require("REDIS_URL", "REFCAMPAIGN_API_KEY")
    app = Celery("refbridge")
    app.conf.update(
        **broker_of(settings).conf(),
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_publish_retry=False,
        # Messages are acknowledged on receipt: the ledger, not the broker, owns redelivery.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # Task events cost more CPU in the worker's main process than anything else it does
        # (bench/). Flower switches them on while it runs (its --enable_events default), and
        # `celery -A celery_app control enable_events` does too (docs/operations.md, Flower).
        worker_send_task_events=False,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.refbridge_settings = settings
    _quiet_broker_retries(reachability_for(settings))
    deliver.register(app)
    sweeper.install(app)
    watchdog.install(app)
    catchup.install(app)
    return app


class _BrokerRetries(logging.Filter):
    """Celery's consumer logs every broker reconnection attempt (several lines each, with a
    traceback once connected): each becomes a note to `watch`, which logs an outage once."""

    def __init__(self, watch: Reachability) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == celery_consumer.CONNECTION_ERROR:
            exc = record.args[1] if isinstance(record.args, tuple) else None
        elif record.msg == celery_consumer.CONNECTION_RETRY:
            exc = record.exc_info[1] if record.exc_info else None
        else:
            return True
        self.watch.failed(exc if isinstance(exc, BaseException) else ConnectionError())
        return False


def _quiet_broker_retries(watch: Reachability) -> None:
    # Also on each connection loss: a multi-line warning that a future Celery will cancel
    # late-acknowledged tasks; refbridge has none (task_acks_late is off). Celery's logging
    # set-up re-enables its warnings after any warnings filter, so the log record is dropped.
    logging.getLogger("py.warnings").addFilter(_not_the_acks_late_notice)
    consumer_log = logging.getLogger(celery_consumer.logger.name)
    consumer_log.filters[:] = [f for f in consumer_log.filters if not isinstance(f, _BrokerRetries)]
    consumer_log.addFilter(_BrokerRetries(watch))


def _not_the_acks_late_notice(record: logging.LogRecord) -> bool:
    return "worker_cancel_long_running_tasks_on_connection_loss" not in record.getMessage()


def _say_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's shutdown notices ("worker: Warm shutdown"), as JSON lines like every other log.

    Celery writes them with a raw os.write from its signal handlers; so does this (no locks).
    """
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    line = json.dumps(
        {"event": msg.strip(), "level": "info", "logger": "celery.apps.worker", "timestamp": stamp}
    )
    stream = f or sys.__stderr__ or sys.__stdout__
    if stream is not None:
        try:
            os.write(stream.fileno(), (line + "\n").encode())
        except OSError:
            pass  # a terminal closed under us (EIO): the shutdown it announces must go on


celery_worker.safe_say = _say_json


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    _configure_logging()


_celery_on_consumer_ready = celery_worker.Worker.on_consumer_ready


def _on_consumer_ready(self: Any, consumer: Any) -> None:
    """Celery's own (the worker_ready signal, then its "ready." line), then the announcement
    `refbridge run` waits for: after that line, so its own ready line never comes first."""
    _celery_on_consumer_ready(self, consumer)
    _announce_ready(consumer)


celery_worker.Worker.on_consumer_ready = _on_consumer_ready


def _announce_ready(sender: Any) -> None:
    """Tell `refbridge run`, through Redis, that this worker consumes now (its ready line)."""
    settings: Settings = sender.app.conf.refbridge_settings
    client = client_for(settings)
    try:
        client.set(worker_ready_key(sender.hostname), os.getpid(), ex=WORKER_READY_TTL)
    except REDIS_ERRORS:
        pass  # Redis just went away: the worker's own connection errors say so
    finally:
        client.close()
