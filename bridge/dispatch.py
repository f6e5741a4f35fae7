"""Nudges: the Celery messages that tell a worker there is due work in the ledger.

A nudge carries no item: the task it runs claims a batch of due items from the ledger. If a
nudge is lost, the items stay due and the sweeper queues another, so the broker's own
redelivery (visibility timeout) never matters. The web side never imports `tasks/` nor builds
a Celery producer: the ledger's intake script pushes a message in Celery's task protocol 2, as
kombu's Redis transport stores it, in the same atomic step that records the item (one Redis
round trip per webhook instead of a ledger write plus apply_async). `tests/test_dispatch.py`
holds the format against Celery's own message builder.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

PROCESS_TASK = "refbridge.process_due"
QUEUE = "refbridge"
_ORIGIN = f"refbridge{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def celery_config(redis_url: str) -> dict[str, object]:
    """Broker settings of the workers' Celery app."""
    return {
        "broker_url": redis_url,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"socket_connect_timeout": 2, "socket_timeout": 5},
        "broker_connection_timeout": 2,
        "task_publish_retry": False,
    }


def nudge_message() -> str:
    """A queue entry that makes a worker run `refbridge.process_due()`."""
    task_id = str(uuid.uuid4())
    args: list[str] = []
    body = json.dumps([args, {}, _EMBED]).encode("utf-8")
    return json.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": PROCESS_TASK,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": repr(args),
                "kwargsrepr": "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        },
        separators=(",", ":"),
    )
