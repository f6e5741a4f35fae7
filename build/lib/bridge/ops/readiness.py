"""When `refbridge run`'s service is really ready: the web answers /readyz, the worker consumes."""

from __future__ import annotations

import time

import redis
import requests

from bridge.redis_client import REDIS_ERRORS

WORKER_READY_PREFIX = "rb:worker_ready:"
# Long enough for `refbridge run` to see it; it names one worker's start, nothing more.
WORKER_READY_TTL = 600


def worker_ready_key(hostname: str) -> str:
    """The Redis key a Celery worker named `hostname` sets once it consumes."""
    return WORKER_READY_PREFIX + hostname


def probe_host(host: str) -> str:
    """The address, as in a URL, to reach a server bound to `host` from this machine."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


class Readiness:
    """Polled by `refbridge run`; true from the first time both halves were seen ready."""

    def __init__(self, readyz_url: str, client: redis.Redis, worker_hostname: str) -> None:
        self.readyz_url = readyz_url
        self.client = client
        self.worker_key = worker_ready_key(worker_hostname)
        self.started = time.monotonic()
        self.web = self.worker = False
        self.http = requests.Session()
        self.http.trust_env = False  # a proxy from the environment must not see a local probe

    def check(self) -> bool:
        """Look again at what was not ready yet; True when everything is."""
        if not self.worker:
            try:
                self.worker = bool(self.client.exists(self.worker_key))
            except REDIS_ERRORS:
                pass
        if not self.web:
            try:
                self.web = self.http.get(self.readyz_url, timeout=2).status_code == 200
            except requests.RequestException:
                pass
        return self.web and self.worker

    def seconds(self) -> float:
        """Seconds since the check began."""
        return round(time.monotonic() - self.started, 1)
