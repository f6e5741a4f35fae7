"""A total deadline for one outbound HTTP exchange: connect, send, headers and body together.

`requests`' timeout bounds each socket operation, not the exchange: an answer that dribbles a
byte every few seconds never times out, and would outlive its claim's lease (the item is then
claimed again while the first attempt still runs). So every connection the adapter's pools lend
to a request made under `within()` is noted for that thread, and a timer shuts down its socket
when the deadline passes: the blocked read fails at once, whatever stage it is in, and the pool
discards the connection.
"""

from __future__ import annotations

import heapq
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

_local = threading.local()


class Exchange:
    """The connections one request used, and whether its deadline cut them."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.cut = False
        self.done = False  # the block ended: nothing left to cut
        self._lock = threading.Lock()

    def use(self, connection: Any) -> None:
        with self._lock:
            if self.cut:
                _shut(connection)
            self.connections.append(connection)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.cut = True
            for connection in self.connections:
                _shut(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its peer or by the pool


class _Watcher:
    """One thread per process that expires the exchanges whose deadline passed (a thread per
    request would cost more than the request's own work)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Exchange]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def forget(self) -> None:
        """In a forked child: the parent's thread is not there, and its lock may look held."""
        self._due, self._wake, self._thread = [], threading.Condition(), None

    def watch(self, exchange: Exchange, seconds: float) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._due, (time.monotonic() + seconds, id(exchange), exchange))
            if self._due[0][2] is exchange:  # sooner than what the thread waits for
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._due and (self._due[0][0] <= now or self._due[0][2].done):
                    _, _, exchange = heapq.heappop(self._due)
                    if not exchange.done:
                        exchange.expire()
                self._wake.wait(self._due[0][0] - now if self._due else None)


_watcher = _Watcher()
os.register_at_fork(after_in_child=_watcher.forget)


@contextmanager
def within(seconds: float) -> Iterator[Exchange]:
    """Run the requests of this block, in this thread, under one total deadline of `seconds`."""
    exchange = Exchange()
    previous = getattr(_local, "exchange", None)
    _local.exchange = exchange
    _watcher.watch(exchange, max(seconds, 0.0))
    try:
        yield exchange
    finally:
        exchange.done = True
        _local.exchange = previous


class _Noted:
    """Mixed into urllib3's pools: each connection a request takes is noted for its deadline."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        exchange: Exchange | None = getattr(_local, "exchange", None)
        if exchange is not None:
            exchange.use(conn)
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _NotedHTTPPool(_Noted, HTTPConnectionPool):
    pass


class _NotedHTTPSPool(_Noted, HTTPSConnectionPool):
    pass


_POOLS = {"http": _NotedHTTPPool, "https": _NotedHTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose pools (direct and through a proxy) note their connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager
