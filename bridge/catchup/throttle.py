"""Pacing a catch-up run's requests: under a provider's rate limit, and apart when retried."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.delivery.pacing import Throttle

__all__ = ["Throttle", "backoff", "pause_before_retry"]

# A provider request is made at most this many times before the run fails, each within this
# timeout; between tries, the provider's Retry-After or `backoff`.
MAX_TRIES = 8
TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
log = structlog.get_logger("refbridge.catchup")


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
