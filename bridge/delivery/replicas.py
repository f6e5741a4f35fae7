"""A webhook's record confirmed on Redis replicas before its 200 (REDIS_MIN_REPLICAS).

Redis replicates asynchronously: a primary that fails over loses the writes its replicas had
not received, and a webhook answered 200 on such a write would never come again. With
REDIS_MIN_REPLICAS = n > 0 the web's intake script is followed, on the same connection and in
the same round trip, by `WAIT n timeout`; fewer than n replicas in time raises ReplicasBehind
(a 503: the provider sends it again). Only the web's acknowledgments wait: every later write
follows one that did in the replication stream, so a failover that loses it loses what came
after it too, and the work it stood for is still due on the new primary (docs/architecture.md,
"Redis high availability").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from redis.commands.core import Script

from config import Settings

log = structlog.get_logger("refbridge.redis")


class ReplicasBehind(redis.exceptions.ConnectionError):
    """Fewer replicas than REDIS_MIN_REPLICAS confirmed a record in time: answered 503, as
    for Redis being unreachable (the record may stand on the primary; a resend is a
    duplicate)."""


@dataclass(frozen=True)
class Replicas:
    """How many replicas must hold a webhook's record, and how long to wait for them."""

    count: int = 0
    timeout: float = 1.0

    @classmethod
    def of(cls, settings: Settings) -> Replicas:
        """REDIS_MIN_REPLICAS and REDIS_WAIT_TIMEOUT."""
        return cls(settings.redis_min_replicas, settings.redis_wait_timeout)

    def run(
        self, client: redis.Redis, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """`script`'s answer, once `count` replicas acknowledged its writes (ReplicasBehind
        otherwise). One round trip: EVALSHA then WAIT on the same connection (WAIT counts the
        writes of its own connection); the script is loaded once more after a failover to a
        primary that never ran it."""
        for loaded in (False, True):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            wait = ("WAIT", self.count, max(1, round(self.timeout * 1000)))
            pipe.execute_command(*wait)  # type: ignore[no-untyped-call]
            try:
                answer, acknowledged = pipe.execute()
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                client.script_load(script.script)
                continue
            _behind.update(int(acknowledged) < self.count, self.count, int(acknowledged))
            if int(acknowledged) < self.count:
                raise ReplicasBehind(f"{acknowledged} of {self.count} replicas in time")
            return answer
        raise AssertionError("unreachable")  # pragma: no cover


class _Behind:
    """Says once that replicas fall behind and once that they are back: silent between."""

    def __init__(self) -> None:
        self._behind = False
        self._lock = threading.Lock()

    def update(self, behind: bool, wanted: int, acknowledged: int) -> None:
        if behind == self._behind:
            return
        with self._lock:
            if behind == self._behind:
                return
            self._behind = behind
        if behind:
            log.warning("redis_replicas_behind", wanted=wanted, acknowledged=acknowledged)
        else:
            log.info("redis_replicas_back", wanted=wanted)


_behind = _Behind()
# Nothing to wait for: REDIS_MIN_REPLICAS 0.
NO_REPLICAS = Replicas()
