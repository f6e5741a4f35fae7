"""Automatic catch-up: once per interval across every worker and machine, one run at a time.

A run holds a lock in Redis (SET NX PX) that its holder renews while it runs, so a holder that
died (SIGKILL, a lost machine) frees it within the lock's expiry. A global "last run started"
time, set under the lock, makes N workers run catch-up once per interval, not N times.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

import redis

LOCK = "rb:catchup:lock"
STARTED = "rb:catchup:started:{provider}"
# The lock's expiry: how long a dead holder blocks the next run. It is renewed every third of
# it, so a live holder keeps it through a long run.
MAX_LOCK_TTL = 60.0
MIN_LOCK_TTL = 5.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lock_ttl(interval: float) -> float:
    """The lock's expiry for runs every `interval` s: a dead holder delays at most one run."""
    return min(MAX_LOCK_TTL, max(MIN_LOCK_TTL, float(interval)))


class RunLock:
    """The catch-up lock while this process holds it, renewed by a thread of its own."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        # Who holds it, for an operator looking at Redis: host and pid, then a nonce.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._stop = threading.Event()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.lost = False

    def acquire(self) -> bool:
        """Take the lock if nobody holds it, and start renewing it."""
        if not self.client.set(LOCK, self.token, nx=True, px=self.ttl_ms):
            return False
        threading.Thread(target=self._keep, name="catchup-lock", daemon=True).start()
        return True

    def release(self) -> None:
        self._stop.set()
        self._release(keys=[LOCK], args=[self.token])

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew(keys=[LOCK], args=[self.token, self.ttl_ms]):
                    self.lost = True  # expired under a stalled process: another may run now
                    return
            except redis.exceptions.RedisError:
                pass  # try again at the next renewal; the expiry covers two misses


def claim_run(client: redis.Redis, provider: str, interval: float) -> RunLock | None:
    """The lock for a run that is due (none started within `interval` s), or None."""
    claimed = claim_runs(client, [provider], interval)
    return claimed[0] if claimed else None


def claim_runs(
    client: redis.Redis, providers: list[str], interval: float
) -> tuple[RunLock, list[str]] | None:
    """The lock and the providers whose run is due (none started within `interval` s), or
    None when none is due or another process holds the lock."""
    keys = {p: STARTED.format(provider=p) for p in providers}
    if not [p for p in providers if not _ran_within(client, keys[p], interval)]:
        return None  # cheap check first: most ticks end here without touching the lock
    lock = RunLock(client, lock_ttl(interval))
    if not lock.acquire():
        return None
    # Read again under the lock: another worker may have just started a run.
    due = [p for p in providers if not _ran_within(client, keys[p], interval)]
    if not due:
        lock.release()
        return None
    now = time.time()
    for provider in due:
        client.set(keys[provider], now)
    return lock, due


def _ran_within(client: redis.Redis, started_key: str, interval: float) -> bool:
    last: bytes | None = client.get(started_key)  # type: ignore[assignment]
    return last is not None and time.time() - float(last) < interval
