"""Handing a claimed item to the workers: a Celery message sent by task name.

The web side never imports `tasks/`; it sends the message by name through a producer-only
Celery app. The message only nudges: if it is lost, the ledger's lease brings the item back.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from bridge.ledger import Claim

PROCESS_TASK = "refbridge.process_item"
QUEUE = "refbridge"

Dispatch = Callable[[Claim], None]


def celery_config(redis_url: str) -> dict[str, object]:
    """Broker settings shared by the producer (web) and the workers."""
    return {
        "broker_url": redis_url,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        # Fail fast while Redis is down: the webhook answers 503 and the provider resends.
        "broker_transport_options": {"socket_connect_timeout": 2, "socket_timeout": 5},
        "broker_connection_timeout": 2,
        "broker_connection_max_retries": 1,
        "task_publish_retry": False,
    }


def make_dispatch(app: Celery) -> Dispatch:
    """A function that sends one process_item message for a claim."""

    def dispatch(claim: Claim) -> None:
        app.send_task(PROCESS_TASK, args=[claim.item_id, claim.token], queue=QUEUE)

    return dispatch


def producer_app(redis_url: str) -> Celery:
    """A Celery app that only sends messages (used by the web process and the CLI)."""
    app = Celery("refbridge-producer")
    app.conf.update(celery_config(redis_url))
    return app
