"""Spacing requests so that a catch-up run stays under a provider's rate limit."""

from __future__ import annotations

import time
from collections.abc import Callable


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
