"""The Redis client every refbridge process uses: short timeouts, so outages fail fast."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

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
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from config import Settings

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
    return host_port(host, port)


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_auth(url: str) -> tuple[str | None, str | None]:
    """The user name and password a Redis URL carries, unquoted (None where it has none)."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    return username, unquote(parts.password) if parts.password else None


_reachability: dict[str, Reachability] = {}
_registry_lock = threading.Lock()


def reachability(url: str, sentinels: Sentinels | None = None) -> Reachability:
    """This process's Reachability for the Redis at `url`, or the primary `sentinels` name
    (one per address)."""
    address = redis_address(url) if sentinels is None else sentinels.label
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

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        # Through Sentinel, finding no primary fails here, before any socket is opened.
        try:
            return super().connect(*args, **kwargs)  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            self.reachability.failed(exc)
            raise

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


def _connection_class(url: str, sentinels: Sentinels | None = None) -> type[AbstractConnection]:
    """redis-py's class for `url`'s scheme (from_url's own choice, or the Sentinel-managed
    one), watched."""
    scheme = urlsplit(url).scheme
    base: type[AbstractConnection] = Connection
    if sentinels is not None:
        base = SentinelManagedSSLConnection if scheme == "rediss" else SentinelManagedConnection
    elif scheme == "rediss":
        base = SSLConnection
    elif scheme == "unix":
        base = UnixDomainSocketConnection
    watch = reachability(url, sentinels)
    key = (base.__name__, watch.address)
    with _registry_lock:
        if key not in _classes:
            name = f"Watched{base.__name__}"
            _classes[key] = type(name, (_Watched, base), {"reachability": watch})
        return _classes[key]


@dataclass(frozen=True)
class Sentinels:
    """Where Redis Sentinels answer, the primary they watch, and their password."""

    hosts: tuple[tuple[str, int], ...]
    master: str = "mymaster"
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How a log line names the primary: its name and the Sentinels, never a password."""
        hosts = ",".join(host_port(h, p) for h, p in self.hosts)
        return f"{self.master} (sentinels {hosts})"

    @property
    def connection_options(self) -> dict[str, Any]:
        """redis-py's options for the connections to the Sentinels themselves."""
        return {"socket_connect_timeout": 1, "socket_timeout": 1, "password": self.password}


def sentinels_of(settings: Settings) -> Sentinels | None:
    """The Sentinels of REDIS_SENTINELS, or None: REDIS_URL names Redis itself."""
    if not settings.redis_sentinels:
        return None
    return Sentinels(
        settings.redis_sentinels, settings.redis_sentinel_master, settings.redis_sentinel_password
    )


def client_for(settings: Settings, *, watched: bool = False) -> redis.Redis:
    """`connect` for the Redis the settings name: REDIS_URL's, or the primary of the Sentinels
    (with REDIS_URL's password, database and TLS)."""
    return connect(settings.redis_url or "", watched=watched, sentinels=sentinels_of(settings))


def reachability_for(settings: Settings) -> Reachability:
    """This process's Reachability for the settings' Redis (REDIS_URL's, or the Sentinels')."""
    return reachability(settings.redis_url or "", sentinels_of(settings))


def connect(url: str, *, watched: bool = False, sentinels: Sentinels | None = None) -> redis.Redis:
    """A client for `url`; a call fails within a few seconds when Redis is down or hung.

    `watched`: for the long-running processes (web, worker), an outage is logged once, with
    Redis's host and port, and once more when Redis answers again (see Reachability). A
    command-line call reports a failure itself instead. With `sentinels`, the client asks them
    for the primary on each new connection and follows a failover: a connection to a primary
    that was demoted fails (redis-py's SentinelManagedConnection), and the next one finds the
    new primary.
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
        options["connection_class"] = _connection_class(url, sentinels)
    if sentinels is None:
        return redis.Redis.from_url(url, **options)
    return _through_sentinels(url, sentinels, options)


def _through_sentinels(url: str, sentinels: Sentinels, options: dict[str, Any]) -> redis.Redis:
    parts = urlsplit(url)
    if parts.scheme == "rediss":
        options.setdefault("connection_class", SentinelManagedSSLConnection)
    database = parts.path.strip("/")
    username, password = url_auth(url)
    found = Sentinel(list(sentinels.hosts), sentinel_kwargs=sentinels.connection_options)  # type: ignore[no-untyped-call]
    client: redis.Redis = found.master_for(  # type: ignore[no-untyped-call]
        sentinels.master,
        username=username,
        password=password,
        db=int(database) if database.isdigit() else 0,
        **options,
    )
    return client
