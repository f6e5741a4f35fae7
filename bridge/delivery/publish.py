"""Publishing deliveries: the Celery task that runs attempts at ledger items, sent by name.

Every attempt runs in a `refbridge.deliver` task whose argument names the items it attempts
(ledger ids: a conversion's externalId, `ipn_…`, `ppwh_…`), so Celery's own tools show what is
delivered and, while work waits, the broker queue holds the backlog. The web publishes one as
soon as its ledger script has recorded an item; the sweeper publishes for due work nobody took
(retries come due, replays, a message lost to a crash). Tasks go through Celery's own API
(`send_task` on the app's pooled producer), never with an ETA or countdown: the ledger says
when work is due, and a task message may safely arrive twice (lua/claim.lua).

Publishers have a Celery app of their own, for publishing only: the web never imports `tasks/`,
and the worker's consumer keeps its own broker settings.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from celery import Celery

from bridge.redis_client import host_port, sentinels_of, url_auth
from config import Settings

DELIVER_TASK = "refbridge.deliver"
QUEUE = "refbridge"
# Most items one task names: each gets its own thread, so every claimed item is worked on at
# once and a claim's lease covers exactly one attempt. The web's tasks name one item each.
BATCH = 8
# Tasks waiting in the queue from which a new item is left to the sweeper's batches (within a
# second) rather than given a task of its own: every worker is busy, and a batch runs eight
# attempts in one pool process where eight tasks would need eight (lua/enqueue.lua).
BACKLOG = 64
# Most tasks the sweeper lets wait in the queue (8,000 items in batches): the rest of a backlog
# waits in the ledger, due, and is published as the queue drains (lua/sweep.lua).
MAX_QUEUED = 1000
# How long after publishing an item is due again, in case its message was lost: longer than a
# message may wait outside the broker's list (taken by a worker that has not started it yet).
PUBLISH_GRACE = 10.0


@dataclass(frozen=True)
class Broker:
    """Celery's broker settings for the Redis that REDIS_URL or REDIS_SENTINELS names."""

    url: str = field(repr=False)
    transport_options: dict[str, Any] = field(default_factory=dict, repr=False)
    use_ssl: dict[str, Any] | None = None

    def conf(self) -> dict[str, Any]:
        """The Celery configuration keys of this broker."""
        conf: dict[str, Any] = {
            "broker_url": self.url,
            "broker_transport_options": self.transport_options,
        }
        if self.use_ssl is not None:
            conf["broker_use_ssl"] = self.use_ssl
        return conf


def broker_of(settings: Settings) -> Broker:
    """The broker of `settings`: REDIS_URL itself, or kombu's `sentinel://` transport with one
    address per Sentinel (REDIS_URL's password and database; TLS when it is `rediss://`)."""
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5}
    url = settings.redis_url or ""
    sentinels = sentinels_of(settings)
    if sentinels is None:
        return Broker(url, options)
    parts = urlsplit(url)
    username, password = url_auth(url)
    auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@" if password else ""
    database = parts.path.strip("/") or "0"
    addresses = [host_port(h, p) for h, p in sentinels.hosts]
    options["master_name"] = sentinels.master
    options["sentinel_kwargs"] = sentinels.connection_options
    alternates = ";".join(f"sentinel://{auth}{address}/{database}" for address in addresses)
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED} if parts.scheme == "rediss" else None
    return Broker(alternates, options, tls)


class Publisher:
    """Publishes `refbridge.deliver` tasks to the refbridge queue of `broker`."""

    def __init__(self, broker: Broker) -> None:
        self.app = Celery("refbridge-publisher", set_as_current=False)
        self.app.conf.update(
            **broker.conf(),
            broker_connection_timeout=2,
            broker_connection_retry=False,
            task_publish_retry=False,
            task_default_queue=QUEUE,
        )

    def deliver(self, item_ids: Sequence[str]) -> None:
        """Publish one task that attempts `item_ids` (raises when the broker cannot take it)."""
        # The default exchange straight to the queue: one LPUSH, no binding look-up. No
        # AsyncResult: its result backend is looked up once per thread, and under gevent every
        # request is a thread of its own (~4 ms of entry-point scanning each; bench/NOTES.md).
        self.app.send_task(
            DELIVER_TASK,
            args=[list(item_ids)],
            exchange="",
            routing_key=QUEUE,
            ignore_result=True,
            result_cls=_Sent,
            add_to_parent=False,
        )


class _Sent:
    """What `send_task` returns here: the task id only (no result backend is asked)."""

    ignored = True

    def __init__(self, task_id: str) -> None:
        self.id = task_id


_publishers: dict[tuple[int, str], Publisher] = {}
_lock = threading.Lock()
os.register_at_fork(after_in_child=_lock._at_fork_reinit)  # type: ignore[attr-defined]


def publisher(settings: Settings) -> Publisher:
    """This process's publisher for the settings' broker: made once per process (its
    connections are not shared across a fork)."""
    broker = broker_of(settings)
    key = (
        os.getpid(),
        repr((broker.url, sorted(broker.transport_options.items()), broker.use_ssl)),
    )
    with _lock:
        found = _publishers.get(key)
        if found is None:
            found = _publishers[key] = Publisher(broker)
        return found
