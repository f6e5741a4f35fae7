"""Pacing a catch-up run's requests: under a provider's rate limit, and apart when retried."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

# A provider request is made at most this many times before the run fails, each within this
# timeout; between tries, the provider's Retry-After or `backoff`.
MAX_TRIES = 8
TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
log = structlog.get_logger("refbridge.catchup")


class Throttle:
    """At most `rate` calls to `wait()` return per second: each waits for its own slot."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    def wait(self) -> None:
        """Return when the next request may go."""
        now = self._clock()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


def backoff(attempt: int) -> float:
    """Seconds before try `attempt` + 1 when the provider named no Retry-After."""
    return float(min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_MAX))


def pause_before_retry(
    sleep: Callable[[float], None], provider: str, error: str, attempt: int, delay: float | None
) -> None:
    """Say that try `attempt` failed, then wait `delay` (the provider's) or the backoff."""
    wait = delay if delay is not None else backoff(attempt)
    log.warning("catchup_retry", provider=provider, error=error, attempt=attempt, wait=wait)
    sleep(wait)
