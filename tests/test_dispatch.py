"""Our hand-built task message must stay what Celery itself would queue (checked on upgrade)."""

from __future__ import annotations

import base64
import json

from celery import Celery

from bridge.dispatch import PROCESS_TASK, QUEUE, nudge_message


def test_nudge_message_matches_celerys_protocol_2():
    ours = json.loads(nudge_message())
    app = Celery(broker="memory://")
    theirs = app.amqp.as_task_v2("id-1", PROCESS_TASK, args=[], kwargs={})
    assert set(ours["headers"]) == set(theirs.headers)
    assert ours["headers"]["task"] == PROCESS_TASK
    assert (
        ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    )
    args, kwargs, embed = json.loads(base64.b64decode(ours["body"]))
    assert (args, kwargs) == ([], {})
    assert [args, kwargs, embed] == json.loads(json.dumps(theirs.body))
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE}
    assert ours["content-type"] == "application/json"


def test_each_message_has_its_own_ids():
    first, second = (json.loads(nudge_message()) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
