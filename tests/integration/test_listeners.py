"""Listeners in a real worker: an idle worker is rung for a new webhook instead of sent a Celery
message, follows `cancel_consumer` / `add_consumer`, and finishes its attempt when it stops."""

from __future__ import annotations

import os
import signal
import threading
import time

import redis

from bridge.delivery.ledger import LISTENERS
from bridge.delivery.nudges import QUEUE
from tests.integration.test_stripe_flow import checkout_event, post
from tests.integration.test_watchdog import celery_control
from tests.standins.refcampaign import Scripted
from tests.waiting import wait_until

END = "end-of-listener-test"


def listening(env: dict[str, str], count: int) -> None:
    client = redis.Redis.from_url(env["REDIS_URL"])
    wait_until(lambda: client.zcard(LISTENERS) == count, what=f"{count} listeners registered")


class Monitor:
    """Every command Redis runs (Redis's MONITOR), until the test sends END."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        redis.Redis.from_url(self.url).echo(END)
        self._thread.join(10)

    def _read(self) -> None:
        with redis.Redis.from_url(self.url).monitor() as monitor:
            self._started.set()
            while True:
                command = monitor.next_command()["command"]
                if END in command:
                    return
                self.commands.append(command)

    def by_script(self) -> list[list[str]]:
        """Each script call's commands, in order (MONITOR lists a script's commands right
        after the EVALSHA that ran it, and nothing between them: scripts run atomically)."""
        calls: list[list[str]] = []
        for command in self.commands:
            name = command.split(" ", 1)[0].upper()
            if name in ("EVALSHA", "EVAL"):
                calls.append([])
            elif calls:
                calls[-1].append(command.upper())
        return calls


def test_an_idle_worker_is_rung_for_each_webhook_not_sent_a_celery_message(
    client, env, worker, refcampaign
):
    listening(env, 2)
    with Monitor(env["REDIS_URL"]) as monitor:
        for n in range(5):
            assert post(client, checkout_event(f"cs_test_rung_{n}")).status_code == 200
            wait_until(lambda n=n: len(refcampaign.accepted) == n + 1, what="the postback")
            listening(env, 2)  # both wait again before the next webhook
    intakes = [c for c in monitor.by_script() if any(" RB:LISTENERS " in x for x in c)]
    intakes = [c for c in intakes if any(x.startswith("EXISTS RB:SEEN:") for x in c)]
    assert len(intakes) == 5
    assert all(any(x.startswith("LPUSH RB:BELL:") for x in c) for c in intakes), intakes
    assert not any(x.startswith(f"LPUSH {QUEUE.upper()} ") for c in intakes for x in c)


def test_cancel_consumer_stops_the_listeners_and_add_consumer_starts_them(
    client, env, worker, refcampaign
):
    listening(env, 2)
    assert "no longer consuming" in celery_control(env, "cancel_consumer", QUEUE)
    listening(env, 0)  # each unregisters when it next looks
    assert post(client, checkout_event("cs_test_drained")).status_code == 200
    time.sleep(2.5)  # two of a listener's waits, and the sweeper's nudge
    assert refcampaign.accepted == []  # a drained worker takes nothing
    assert "add consumer" in celery_control(env, "add_consumer", QUEUE)
    wait_until(lambda: refcampaign.accepted, what="the postback after add_consumer")
    listening(env, 2)


def test_a_worker_told_to_stop_lets_a_listeners_attempt_finish(client, env, worker, refcampaign):
    listening(env, 2)
    # Longer than the second a pool process lingers when it exits, within DELIVERY_TIMEOUT.
    refcampaign.default = Scripted(status=None, delay=1.6)
    assert post(client, checkout_event("cs_test_stopping")).status_code == 200
    wait_until(lambda: refcampaign.requests, what="the postback to start")
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGTERM)  # the main process only: a warm shutdown
    worker.proc.wait(30)
    assert worker.proc.returncode == 0, worker.output()[-3000:]
    item = redis.Redis.from_url(env["REDIS_URL"]).hgetall("rb:item:cs_test_stopping")
    # Finished, not left to its lease:
    assert item[b"status"] == b"delivered", worker.output()[-6000:]
    assert len(refcampaign.accepted) == 1
