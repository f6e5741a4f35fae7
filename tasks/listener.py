"""Listeners: a thread in each pool process that takes new work without a Celery message.

At a steady rate of webhooks each one used to queue a nudge of its own, and each nudge cost
the worker's main process more CPU than the delivery itself (kombu's read loop, the prefork
hand-off), and set the tail of webhook → postback latency (bench/NOTES.md). So each pool
process also runs a listener: it claims due work itself, and a claim that finds nothing
registers it, in the same atomic step, to be rung by the next item the intake records
(lua/claim.lua, lua/enqueue.lua). It then waits for the bell (a Redis BLPOP) for up to
LISTEN_WAIT seconds and claims again. Nudges do the rest: they wake workers while no listener
waits (a burst), and the sweeper's nudges bring retries and lost work as before.

A listener takes work only while its worker consumes the refbridge queue: `celery control
cancel_consumer refbridge` (how an operator drains a worker) and a warm shutdown stop it,
`add_consumer` starts it again. The main process keeps that state in a byte of memory shared
with its pool processes (mapped before they fork).

A listener is not a task: Celery sees an idle pool and stops it as it always did. A pool
process that ends cleanly first lets its listener's attempts finish (within their lease); a
pool process killed (SIGKILL, or its main process gone) ends them mid-attempt, a death the
ledger already handles (the claim's lease runs out and the item is attempted again). A
listener takes no suspect (an item whose worker died under it), and claims nothing while a
task runs one in its process (bridge/delivery/attempts.py, Occupancy).
"""

from __future__ import annotations

import mmap
import os
import threading
from functools import partial
from typing import Any

import redis
import structlog
from celery import Celery, signals
from celery.worker.consumer import consumer as celery_consumer

from bridge.delivery.attempts import BATCH, run_claimed, run_lease
from bridge.delivery.ledger import Ledger, new_token
from bridge.delivery.nudges import QUEUE
from bridge.redis_client import REDIS_ERRORS, connect
from tasks.resources import current_worker

# How often a listener whose worker does not consume looks again.
GATE_POLL = 0.5
# How often a listener looks again while a suspect runs in its process.
SUSPECT_POLL = 0.1
# Longest pause after Redis failed to answer; the first is 0.1 s, doubled each time.
MAX_PAUSE = 2.0
log = structlog.get_logger("refbridge.listener")

# One byte shared by the main process and its pool processes: 1 while the consumer consumes.
_gate = mmap.mmap(-1, 1)


def open_gate(consuming: bool) -> None:
    """Let the listeners take work (`consuming`) or stop them from taking more."""
    _gate[0] = 1 if consuming else 0


def gate_open() -> bool:
    """Whether this worker's consumer consumes the refbridge queue (listeners may take work)."""
    return _gate[0] == 1


class Listener:
    """One pool process's listener thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.token = f"{os.getpid()}:{new_token()}"
        # Its own client, not watched: an outage is the main process's to report (once, by
        # its sweeper); a listener only waits for Redis to answer again.
        settings = app.conf.refbridge_settings
        self.ledger = Ledger(connect(settings.redis_url or ""), settings.attribution_memory_days)
        self._stop = threading.Event()
        self._working = threading.Lock()  # held while claiming and attempting
        self._registered = False
        self._pause = 0.0
        self._said = ""  # the Redis error answer last logged

    def start(self) -> Listener:
        threading.Thread(target=self._loop, name="listener", daemon=True).start()
        return self

    def stop(self, wait: float) -> None:
        """Take no more work; wait up to `wait` seconds for the attempts running to finish."""
        self._stop.set()
        if self._working.acquire(timeout=wait):
            self._working.release()
        try:
            self.ledger.unlisten(self.token)
        except REDIS_ERRORS:
            pass  # the registration lapses by itself within seconds

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
                self._pause, self._said = 0.0, ""
            except REDIS_ERRORS:
                self._back_off()
            except redis.exceptions.RedisError as exc:
                # An error answer (READONLY after a failover, OOM, MISCONF): said once, then
                # retried quietly like an outage.
                error = type(exc).__name__
                if error != self._said:
                    log.warning("listener_redis_error", error=error, detail=str(exc)[:200])
                    self._said = error
                self._back_off()
            except Exception:  # noqa: BLE001 — the listener must outlive any one bad turn
                log.exception("listener_crashed")
                self._stop.wait(1.0)

    def _back_off(self) -> None:
        self._pause = min(max(2 * self._pause, 0.1), MAX_PAUSE)
        self._stop.wait(self._pause)

    def _step(self) -> None:
        if not gate_open():
            if self._registered:
                self.ledger.unlisten(self.token)
                self._registered = False
            self._stop.wait(GATE_POLL)
            return
        worker = current_worker(self.app)
        lease = run_lease(worker.settings)
        claim = partial(self.ledger.claim, lease, BATCH, listener=self.token, alone=False)
        with self._working:
            if self._stop.is_set():
                return
            with worker.occupancy.listener_claim(claim) as claimed:
                if claimed is not None:
                    self._registered = not claimed.claims
                    run_claimed(worker, claimed)
        if claimed is None:  # a suspect runs alone here: claim again once it is done
            self._stop.wait(SUSPECT_POLL)
        elif self._registered:
            self.ledger.wait_for_bell(self.token)


_listener: dict[str, Listener] = {}


def _start(app: Celery) -> None:
    _listener["this process"] = Listener(app).start()


def _stop(app: Celery) -> None:
    listener = _listener.pop("this process", None)
    if listener is not None:
        listener.stop(run_lease(app.conf.refbridge_settings))


_cancel_task_queue = celery_consumer.Consumer.cancel_task_queue
_add_task_queue = celery_consumer.Consumer.add_task_queue


def _cancel(self: Any, queue: str) -> None:
    if queue == QUEUE:
        open_gate(False)
    _cancel_task_queue(self, queue)


def _add(self: Any, queue: str, *args: Any, **kwargs: Any) -> None:
    _add_task_queue(self, queue, *args, **kwargs)
    if queue == QUEUE:
        open_gate(True)


celery_consumer.Consumer.cancel_task_queue = _cancel
celery_consumer.Consumer.add_task_queue = _add


def install(app: Celery) -> None:
    """Run a listener in each of `app`'s pool processes; the gate opens when its consumer is
    ready (tasks/app.py) and closes when the worker shuts down."""
    uid = "refbridge.listener"  # one of each per process, however many apps are made
    signals.worker_process_init.connect(lambda **_: _start(app), weak=False, dispatch_uid=uid)
    signals.worker_process_shutdown.connect(lambda **_: _stop(app), weak=False, dispatch_uid=uid)
    signals.worker_shutting_down.connect(lambda **_: open_gate(False), weak=False, dispatch_uid=uid)
