"""The stuck-consumer watchdog: a worker that no longer takes tasks notices and recovers.

Celery's consumer can stop taking messages after a broker reconnect while the process lives on
and logs "Connected to redis" (celery/celery#8030, #8091, #8990). The ledger keeps the work
safe, but nothing is delivered until the worker is restarted. A thread in the worker's main
process looks every CHECK_EVERY seconds (one Redis round trip): when tasks wait in the queue
and this worker's own pool is idle, yet it has received nothing for STALL seconds, its consumer
is stuck, and it exits with EXIT_STUCK so that its supervisor starts a fresh one. A healthy
idle worker takes a waiting task within milliseconds, so only a worker that could take the
work and does not is called stuck: a busy worker (its pool has work) and a fresh worker (the
clock starts when the watchdog does) are not.

An operator drains a worker with a warm shutdown (SIGTERM, `celery control shutdown`), which
the watchdog never sees as stuck; `cancel_consumer` is how the heal tests make a stuck one.

Why exit rather than resume consuming in place: both were tried against a live worker. After
`celery control cancel_consumer refbridge`, asking the worker to `add_consumer` its own queue
and exiting both recovered it (within about 35 s). Redis killed and restarted from its AOF
under load, eleven times, never left the consumer stuck here, so neither could be seen to act
on the real trigger. What decides it is Celery's code: `add_task_queue` does nothing when the
consumer believes it still consumes from the queue, which is the reconnect bug's state
("Connected to redis", queues declared, nothing taken), and the request travels through the
same broker connection and event loop that are in doubt. A fresh process recovers whatever the
cause, and the ledger makes the exit safe: the pool is idle, and anything claimed comes back
when its lease ends.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Celery, bootsteps, signals
from celery.worker import state as worker_state

from bridge.delivery.publish import QUEUE
from bridge.delivery.stats import STATS, stat
from bridge.redis_client import REDIS_ERRORS
from tasks.resources import current_worker

CHECK_EVERY = 5.0
# Tasks waiting, an idle pool, nothing received: this long and the consumer is stuck.
# Longer than kombu's longest wait between reconnection attempts (30 s, after a long outage), so
# a consumer still on its way back is left to it; short enough to act within a minute (STALL
# plus one CHECK_EVERY).
STALL = 35.0
# The exit status that tells the supervisor (`refbridge run`, systemd, the platform) to restart.
EXIT_STUCK = 70  # EX_SOFTWARE
STUCK = stat("worker", outcome="consumer_stuck")
log = structlog.get_logger("refbridge.watchdog")


@dataclass(frozen=True)
class Sighting:
    """What one check saw."""

    queued: int
    idle: bool
    since_taken: float


class StallWatch:
    """Decides, one check at a time, whether the consumer has been stuck for `stall` seconds."""

    def __init__(self, now: float, stall: float = STALL) -> None:
        self.stall = stall
        self.last_taken = now
        self._waiting_since: float | None = None

    def taken(self, now: float) -> None:
        """The consumer received a task: it is consuming."""
        self.last_taken = now

    def check(self, now: float, queued: int, idle: bool) -> Sighting | None:
        """The sighting when the consumer is stuck, else None."""
        if not (queued > 0 and idle):
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now
        since = now - max(self._waiting_since, self.last_taken)
        if since < self.stall:
            return None
        return Sighting(queued, idle, round(now - self.last_taken, 1))


def pool_idle() -> bool:
    """No task of this worker is running or waiting for a pool process (main process state)."""
    return not worker_state.active_requests and not worker_state.reserved_requests


def queued(app: Celery) -> int:
    """Tasks waiting in the broker queue."""
    waiting: int = current_worker(app).ledger.redis.llen(QUEUE)  # type: ignore[assignment]
    return waiting


class Watchdog(bootsteps.StartStopStep):
    """Checks every CHECK_EVERY seconds while the worker runs; ends a stuck worker."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._watch = StallWatch(time.monotonic())

    def start(self, parent: Any) -> None:
        self._watch = StallWatch(time.monotonic())
        signals.task_received.connect(self._received, weak=False)
        args = (parent.app, parent.hostname)
        threading.Thread(target=self._loop, args=args, name="watchdog", daemon=True).start()

    def stop(self, parent: Any) -> None:
        self._stop.set()

    def _received(self, **_: Any) -> None:
        self._watch.taken(time.monotonic())

    def _loop(self, app: Celery, hostname: str) -> None:
        while not self._stop.wait(CHECK_EVERY):
            try:
                waiting = queued(app)
            except REDIS_ERRORS:
                continue  # the sweeper logs the outage; a stall is judged once Redis answers
            seen = self._watch.check(time.monotonic(), waiting, pool_idle())
            if seen is not None:
                self._stuck(app, hostname, seen)
                return

    def _stuck(self, app: Celery, hostname: str, seen: Sighting) -> None:
        log.error(
            "consumer_stuck",
            worker=hostname,
            queued_tasks=seen.queued,
            seconds_since_last_task=seen.since_taken,
            pool_idle=seen.idle,
            action="exit",
        )
        try:
            current_worker(app).ledger.redis.hincrby(STATS, STUCK, 1)
        except REDIS_ERRORS:
            pass  # the log line says it; the exit must not wait on the count
        _exit()


def _exit() -> None:
    # A warm shutdown with a failure status: the consumer's loop raises WorkerShutdown at its
    # next tick, the idle pool stops at once and the supervisor sees a non-zero exit.
    worker_state.should_stop = EXIT_STUCK
    time.sleep(STALL)
    os._exit(EXIT_STUCK)  # the loop itself is wedged: no clean way out is left


def install(app: Celery) -> None:
    """Add the watchdog to `app`'s workers."""
    app.steps["worker"].add(Watchdog)
