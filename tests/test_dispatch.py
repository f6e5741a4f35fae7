"""Our hand-built task message must stay what Celery itself would queue (checked on upgrade)."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from celery import Celery

from bridge.delivery.ledger import NUDGES, Ledger
from bridge.delivery.nudges import PROCESS_TASK, QUEUE, new_ids, nudge_message


def test_nudge_message_matches_celerys_protocol_2():
    ours = json.loads(nudge_message(*new_ids()))
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


def test_ids_are_random_uuid4s():
    ids = [i for _ in range(200) for i in new_ids()]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_the_scripts_queue_the_same_message_with_fresh_ids(redis_url: str):
    client = redis.Redis.from_url(redis_url)  # flushed by the fixture
    ledger = Ledger(client)
    fields = {"kind": "conversion", "payload": "{}"}
    assert ledger.enqueue("cs_dispatch_1", "rb:seen:test:dispatch_1", fields)
    assert ledger.nudge(batch=1, most=2) == 0  # one queued, one due: enough
    assert ledger.enqueue("cs_dispatch_2", "rb:seen:test:dispatch_2", fields)
    queued = [json.loads(m) for m in client.lrange(QUEUE, 0, -1)]
    assert len(queued) == 2
    client.delete(QUEUE, NUDGES)
    assert ledger.nudge(batch=1, most=3) == 2  # two due, none queued: two nudges
    queued += [json.loads(m) for m in client.lrange(QUEUE, 0, -1)]
    for message in queued:
        task_id, tag = message["headers"]["id"], message["properties"]["delivery_tag"]
        assert message == json.loads(nudge_message(task_id, tag))
        assert uuid.UUID(task_id).version == uuid.UUID(tag).version == 4
    ids = [m["headers"]["id"] for m in queued] + [m["properties"]["delivery_tag"] for m in queued]
    assert len(set(ids)) == len(ids)


def test_a_nudge_is_what_celerys_own_producer_stores(redis_url: str):
    """Field by field against a task Celery itself published into the same Redis list."""
    client = redis.Redis.from_url(redis_url)  # flushed by the fixture
    app = Celery("refbridge", broker=redis_url)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
    with app.connection_for_write() as connection:
        app.send_task(PROCESS_TASK, connection=connection, ignore_result=True)
    stored = [json.loads(m) for m in client.lrange(QUEUE, 0, -1)]
    assert len(stored) == 1
    theirs = stored[0]
    task_id, tag = theirs["headers"]["id"], theirs["properties"]["delivery_tag"]
    ours = json.loads(nudge_message(task_id, tag))
    # Celery's producer names its own process ("gen<pid>@<host>"); a nudge names refbridge.
    assert theirs["headers"].pop("origin").startswith("gen")
    assert ours["headers"].pop("origin").startswith("refbridge@")
    # The publishing app's reply queue, for results: a nudge has none (ignore_result).
    assert theirs["properties"].pop("reply_to") and ours["properties"].pop("reply_to") == ""
    assert flatten(ours) == flatten(theirs)


def flatten(message: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a message by its path, the base64 body decoded, so a diff names fields."""
    out: dict[str, object] = {}
    for key, value in message.items():
        path = f"{prefix}{key}"
        if key == "body" and not prefix:
            value = json.loads(base64.b64decode(value))
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out
