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


def _nudge_template() -> str:
    body = json.dumps([[], {}, _EMBED]).encode("utf-8")
    return json.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": PROCESS_TASK,
                "id": "@ID@",
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": "@ID@",
                "parent_id": None,
                "argsrepr": "[]",
                "kwargsrepr": "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": "@ID@",
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": "@TAG@",
            },
        },
        separators=(",", ":"),
    )


# Every nudge is the same message but for its task id and delivery tag (kombu tracks unacked
# messages by tag): fill a template rather than build and serialise it per webhook.
_TEMPLATE = _nudge_template()


def nudge_message() -> str:
    """A queue entry that makes a worker run `refbridge.process_due()`."""
    return _TEMPLATE.replace("@ID@", str(uuid.uuid4())).replace("@TAG@", str(uuid.uuid4()))
