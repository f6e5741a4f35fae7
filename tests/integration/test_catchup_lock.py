"""The automatic catch-up's lock and schedule against a real Redis: one holder at a time, kept
while its holder lives, freed by its expiry when the holder dies; one run per interval.

The holders are real processes taking the lock with bridge/catchup/schedule.py, killed with
SIGKILL (a crash) or stopped with SIGSTOP (a process stalled past its lock's expiry)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from bridge.catchup.schedule import LOCK, STARTED, RunLock, claim_run
from tests.processes import ROOT
from tests.waiting import wait_until

# Takes the lock when told to (a line on stdin), says its token, and keeps the lock until it
# learns that it lost it; then releases it, late, as a stalled process that came back would.
HOLDER = """
import sys, time
import redis
from bridge.catchup.schedule import RunLock

lock = RunLock(redis.Redis.from_url(sys.argv[1]), ttl=float(sys.argv[2]))
sys.stdin.readline()
assert lock.acquire(), "the lock was not free"
print(lock.token, flush=True)
while not lock.lost:
    time.sleep(0.02)
lock.release()
print("released", flush=True)
"""


class Holder:
    """A process that holds the catch-up lock (HOLDER), started ready to take it."""

    def __init__(self, redis_url: str, ttl: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, redis_url, str(ttl)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # it exited

    def line(self, timeout: float = 10.0) -> str:
        """Its next line of output, waited for."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the holder said nothing within {timeout:g} s") from None
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"the holder exited: {self.proc.stderr.read()[-2000:]}")
        return line

    def take(self) -> bytes:
        """Tell it to take the lock; its token, once it holds it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("take\n")
        self.proc.stdin.flush()
        return self.line().encode()

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture()
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


def test_one_holder_at_a_time_and_once_per_interval(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = claim_run(client, "stripe", 2)
    assert first is not None
    assert claim_run(client, "stripe", 2) is None  # started within the interval
    client.delete(STARTED.format(provider="stripe"))
    assert claim_run(client, "stripe", 2) is None  # due, but the lock is held
    first.release()
    client.set(STARTED.format(provider="stripe"), time.time())
    assert claim_run(client, "stripe", 2) is None  # released, but one ran within the interval
    client.set(STARTED.format(provider="stripe"), time.time() - 2.1)
    second = claim_run(client, "stripe", 2)
    assert second is not None
    second.release()
    assert client.get(LOCK) is None


@pytest.mark.alone  # a 0.6 s lock renewed every 0.2 s: a loaded machine could starve a renewal
def test_a_live_holder_keeps_the_lock_past_its_expiry(
    redis_url: str, holders: list[Holder]
) -> None:
    client = redis.Redis.from_url(redis_url)
    holder = Holder(redis_url, ttl=0.6)
    holders.append(holder)
    token = holder.take()
    first_expiry = time.monotonic() + 0.6  # at the latest: it took the lock before saying so
    renewals, last = 0, client.pttl(LOCK)
    # Held all along, past the expiry it was taken with, renewed again and again meanwhile.
    while time.monotonic() < first_expiry or renewals < 3:
        assert client.get(LOCK) == token, f"a live holder lost its lock ({renewals} renewals)"
        assert time.monotonic() < first_expiry + 5, f"{renewals} renewals in 5 s"
        left = client.pttl(LOCK)
        renewals, last = renewals + int(left > last), left
        time.sleep(0.02)
    assert not RunLock(client, ttl=0.6).acquire()
    assert holder.proc.poll() is None  # alive, and it never learnt that it lost the lock


def test_a_dead_holder_loses_the_lock_and_a_stalled_one_frees_nobody_elses(
    redis_url: str, holders: list[Holder]
) -> None:
    client = redis.Redis.from_url(redis_url)
    dead, stalled = Holder(redis_url, ttl=0.3), Holder(redis_url, ttl=0.3)
    holders += [dead, stalled]
    dead.take()
    dead.kill()  # SIGKILL: it releases nothing, and nothing renews its lock any more
    assert client.pttl(LOCK) != -1, "the lock has no expiry: a dead holder would keep it"
    wait_until(
        lambda: client.get(LOCK) is None, timeout=10, what="the dead holder's lock to expire"
    )

    stalled.take()
    stalled.signal(signal.SIGSTOP)  # stalled past its lock's expiry: another process may run
    wait_until(lambda: client.get(LOCK) is None, timeout=10, what="the stalled lock to expire")
    other = RunLock(client, ttl=60)
    assert other.acquire()
    try:
        stalled.signal(signal.SIGCONT)
        # Back, it finds it lost the lock, and releases it late: not the new holder's lock.
        assert stalled.line() == "released"
        assert client.get(LOCK) == other.token.encode()
    finally:
        other.release()
    assert client.get(LOCK) is None
