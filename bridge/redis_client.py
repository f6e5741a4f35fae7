"""The Redis client every refbridge process uses: short timeouts, so outages fail fast."""

from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.retry import Retry

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
log = structlog.get_logger("refbridge.redis")


class Reachability:
    """Says once that Redis cannot be reached and once that it answers again; silent between.

    Every caller keeps retrying on its own schedule (the web answers 503, the sweeper sweeps
    again in a second): this only keeps an outage to two log lines per process.
    """

    def __init__(self, address: str, password: str | None) -> None:
        self.address = address
        self._password = password
        self._down_since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a failure and the next answer."""
        return self._down_since is not None

    def failed(self, exc: BaseException) -> None:
        """Note a failure to reach Redis; log it if it is the first since the last answer."""
        if self._down_since is not None:
            return
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        detail = str(exc)[:200]
        if self._password and self._password in detail:
            detail = ""  # never the password, whatever a message quotes
        log.warning(
            "redis_unreachable",
            redis=self.address,
            error=type(exc).__name__,
            detail=detail,
            retrying="quietly, until Redis answers",
        )

    def reached(self) -> None:
        """Note an answer from Redis; log it if Redis had been unreachable."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.info("redis_reachable", redis=self.address, down_seconds=_since(since))

    def forget(self) -> None:
        """Start afresh without a line (in a forked child, which has said nothing yet)."""
        self._down_since = None
        self._lock = threading.Lock()


def _since(started: float) -> float:
    return round(time.monotonic() - started, 1)


def redis_time(client: redis.Redis) -> float:
    """Redis's own clock, in seconds: what every due time and lease in the ledger counts by."""
    seconds, micros = client.time()  # type: ignore[misc]
    return float(seconds) + float(micros) / 1e6


def redis_address(url: str) -> str:
    """Where `url` points, as host:port or a socket path: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "?"
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_reachability: dict[str, Reachability] = {}
_registry_lock = threading.Lock()


def reachability(url: str) -> Reachability:
    """This process's Reachability for the Redis at `url` (one per address)."""
    address = redis_address(url)
    with _registry_lock:
        found = _reachability.get(address)
        if found is None:
            found = _reachability[address] = Reachability(address, urlsplit(url).password)
        return found


def _forget_all() -> None:
    for watch in _reachability.values():
        watch.forget()
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_all)


class _Watched:
    """Mixed into redis-py's connection class: reports each failure and answer to a
    Reachability, so that an outage is logged once however many calls it fails."""

    reachability: Reachability

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            self.reachability.failed(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        # A pooled connection that Redis closed (it restarted) fails here once and is opened
        # again by the client's retry: only a failure to connect again is an outage, or a
        # Redis that accepted the connection but does not answer.
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.TimeoutError as exc:
            self.reachability.failed(exc)
            raise
        except redis.exceptions.ResponseError:
            self.reachability.reached()  # an error reply is still an answer
            raise
        self.reachability.reached()
        return response


_classes: dict[tuple[str, str], type[AbstractConnection]] = {}


def _connection_class(url: str) -> type[AbstractConnection]:
    """redis-py's class for `url`'s scheme (from_url's own choice), watched."""
    scheme = urlsplit(url).scheme
    base: type[AbstractConnection] = Connection
    if scheme == "rediss":
        base = SSLConnection
    elif scheme == "unix":
        base = UnixDomainSocketConnection
    watch = reachability(url)
    key = (base.__name__, watch.address)
    with _registry_lock:
        if key not in _classes:
            name = f"Watched{base.__name__}"
            _classes[key] = type(name, (_Watched, base), {"reachability": watch})
        return _classes[key]


def connect(url: str, *, watched: bool = False) -> redis.Redis:
    """A client for `url`; a call fails within a few seconds when Redis is down or hung.

    `watched`: for the long-running processes (web, worker), an outage is logged once, with
    Redis's host and port, and once more when Redis answers again (see Reachability). A
    command-line call reports a failure itself instead.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 3,
        "health_check_interval": 15,
        # Sent once more only after a connection error: what a pooled connection that Redis
        # closed (it restarted) gives on its next use, before Redis ran anything. Never after
        # a read timeout: Redis has the command then and may still run it (it was busy, or
        # stalled on a disk write), and a claim, a finish or an intake sent twice would run
        # twice (a batch stranded for a lease, a count doubled). Such a call fails instead;
        # each caller already treats a failed call as Redis being unavailable (the web answers
        # 503, an attempt is tried again after its lease). redis-py's Retry resends after its
        # `supported_errors`, which include both timeouts by default (redis/retry.py).
        "retry": Retry(
            ExponentialBackoff(cap=0.2, base=0.05),
            1,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
        "retry_on_error": [redis.exceptions.ConnectionError],
    }
    if watched:
        options["connection_class"] = _connection_class(url)
    return redis.Redis.from_url(url, **options)
