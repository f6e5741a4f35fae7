"""Our hand-built task message must stay what Celery itself would queue (checked on upgrade)."""

from __future__ import annotations

import base64
import json

from celery import Celery

from bridge.dispatch import PROCESS_TASK, QUEUE, task_message


def test_task_message_matches_celerys_protocol_2():
    ours = json.loads(task_message("cs_test_1", "tok"))
    app = Celery(broker="memory://")
    theirs = app.amqp.as_task_v2("id-1", PROCESS_TASK, args=["cs_test_1", "tok"], kwargs={})
    assert set(ours["headers"]) == set(theirs.headers)
    assert ours["headers"]["task"] == PROCESS_TASK
    assert (
        ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    )
    args, kwargs, embed = json.loads(base64.b64decode(ours["body"]))
    assert (args, kwargs) == (["cs_test_1", "tok"], {})
    assert [args, kwargs, embed] == json.loads(json.dumps(theirs.body))
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE}
    assert ours["content-type"] == "application/json"


def test_each_message_has_its_own_ids():
    first, second = (json.loads(task_message("x", "t")) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
