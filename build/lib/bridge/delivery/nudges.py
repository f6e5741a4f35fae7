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
import re
import socket

PROCESS_TASK = "refbridge.process_due"
QUEUE = "refbridge"
# The same in every process of a host, so they run the same scripts (one SHA in Redis); the
# host name cut to the characters host names use, as it goes inside the scripts' Lua text.
_ORIGIN = "refbridge@" + re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
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
                "argsrepr": "()",
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
# messages by tag). The ledger's scripts hold this template and fill it in Redis, so a webhook
# sends Redis two short ids, not the whole message (see bridge.delivery.scripts).
TEMPLATE = _nudge_template()


def new_ids() -> tuple[str, str]:
    """A fresh task id and delivery tag, in the UUID4 form Celery and kombu use."""
    raw = bytearray(os.urandom(32))
    for half in (0, 16):  # the version and variant bits of a random UUID
        raw[half + 6] = (raw[half + 6] & 0x0F) | 0x40
        raw[half + 8] = (raw[half + 8] & 0x3F) | 0x80
    text = raw.hex()
    return _dashed(text[:32]), _dashed(text[32:])


def _dashed(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def nudge_message(task_id: str, tag: str) -> str:
    """The queue entry that runs `refbridge.process_due()` in a worker, as the scripts write it."""
    return TEMPLATE.replace("@ID@", task_id).replace("@TAG@", tag)
