"""Slow clients against the Procfile's web process: none of them holds it, each is cut at 10 s.

With gunicorn's sync workers, six connections sending a byte a second held both workers and a
signed webhook waited 13 s. These tests connect 100 of them and time what legitimate traffic
sees meanwhile.
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from bridge.ops.embedded_redis import free_port
from tests.processes import WebProcess
from tests.signing import stripe_body, stripe_headers
from tests.standins.paypal_api import transmission

# Latency under load is what these tests time: they run alone (see the `alone` marker).
pytestmark = [pytest.mark.timeout(180), pytest.mark.alone]

SLOW_BODY_HEAD = (
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: refbridge\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n"
)
SLOW_HEADERS_HEAD = b"POST /webhooks/stripe HTTP/1.1\r\nHost: refbridge\r\n"
# The same slow body on the PayPal REST route, its transmission headers complete.
SLOW_REST_BODY_HEAD = (
    b"POST /webhooks/paypal HTTP/1.1\r\nHost: refbridge\r\nContent-Type: application/json\r\n"
    + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in transmission("WH-SLOW").items())
    + b"Content-Length: 4000\r\n\r\n"
)


@pytest.fixture()
def web(env: dict[str, str], tmp_path: Path) -> Iterator[WebProcess]:
    proc = WebProcess(env, tmp_path / "web.log", free_port()).start()
    yield proc
    proc.stop()


class Trickle:
    """Connections that send their first bytes, then one byte a second each, until cut."""

    def __init__(self, port: int, heads: list[bytes], drip: bytes) -> None:
        self.started = time.monotonic()
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in heads]
        self.answers: dict[int, bytes] = {}
        self.ended_at: dict[int, float] = {}
        self._drip = drip
        self._stop = threading.Event()
        for sock, head in zip(self.socks, heads, strict=True):
            sock.sendall(head)
            sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for n, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, n)
        next_drip = time.monotonic() + 1
        while not self._stop.is_set() and len(self.ended_at) < len(self.socks):
            for key, _ in selector.select(timeout=0.05):
                n = key.data
                try:
                    data = self.socks[n].recv(4096)
                except OSError:
                    data = b""
                self.answers[n] = self.answers.get(n, b"") + data
                if not data:
                    self.ended_at[n] = time.monotonic() - self.started
                    selector.unregister(self.socks[n])
            if time.monotonic() >= next_drip:
                next_drip += 1
                for n, sock in enumerate(self.socks):
                    if n not in self.ended_at:
                        try:
                            sock.send(self._drip)
                        except OSError:
                            pass  # cut by the server: the reader records when
        selector.close()

    def wait_all_ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ended_at) < len(self.socks) and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def signed_webhook(base: str, n: int) -> float:
    """POST one distinct signed checkout; seconds until its 200."""
    event = {
        "id": f"evt_slow_{n}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "livemode": False,
        "data": {
            "object": {
                "id": f"cs_slow_{n}",
                "object": "checkout.session",
                "payment_status": "paid",
                "mode": "payment",
                "amount_total": 4900,
                "currency": "usd",
                "client_reference_id": "rcs_slow",
                "metadata": {},
            }
        },
    }
    body = stripe_body(event)
    started = time.monotonic()
    answer = requests.post(
        f"{base}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


def test_webhooks_keep_their_latency_while_100_slow_clients_are_connected(
    web: WebProcess, redis_url: str
) -> None:
    quiet = [signed_webhook(web.url, n) for n in range(15)][5:]
    bodies = (SLOW_BODY_HEAD, SLOW_REST_BODY_HEAD)
    heads = [bodies[n // 2 % 2] if n % 2 else SLOW_HEADERS_HEAD for n in range(100)]
    trickle = Trickle(web.port, heads, b"x")
    try:
        time.sleep(2)  # every slow client connected and dripping
        loaded = [signed_webhook(web.url, n) for n in range(100, 130)]
        trickle.wait_all_ended(14)
        ended, answers = dict(trickle.ended_at), dict(trickle.answers)
    finally:
        trickle.close()
    # Normal latency: a few ms here. Sync workers made this 13 s with six slow clients.
    assert max(loaded) < 1.0, loaded
    assert statistics.median(loaded) < 3 * statistics.median(quiet) + 0.05, (quiet, loaded)
    # Every slow client was cut once its 10 s were up, not before, and not much later.
    assert len(ended) == 100
    assert 9.0 <= min(ended.values()) and max(ended.values()) <= 13.0, sorted(ended.values())
    slow_bodies = [answers.get(n, b"") for n in range(1, 100, 2)]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in slow_bodies), set(slow_bodies)
    # Nothing a slow client sent was recorded; every signed webhook was.
    recorded = redis.Redis.from_url(redis_url).keys("rb:item:*")
    assert len(recorded) == 45


def test_a_body_not_complete_within_10_s_is_answered_408_and_dropped(web: WebProcess) -> None:
    trickle = Trickle(web.port, [SLOW_BODY_HEAD + b'{"id": "evt_'], b"1")
    try:
        trickle.wait_all_ended(14)
    finally:
        trickle.close()
    assert 9.0 <= trickle.ended_at[0] <= 12.0
    status, _, rest = trickle.answers[0].partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": "request not received within 10 s"
    }


def test_headers_not_complete_within_10_s_are_dropped(web: WebProcess) -> None:
    trickle = Trickle(web.port, [SLOW_HEADERS_HEAD], b"X")
    try:
        trickle.wait_all_ended(14)
    finally:
        trickle.close()
    assert 9.0 <= trickle.ended_at[0] <= 12.0
    assert trickle.answers[0] == b""


def test_a_client_that_waits_for_100_continue_gets_it(web: WebProcess) -> None:
    body = b"not a signed event"
    head = (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: refbridge\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


def test_each_connection_carries_one_request(web: WebProcess) -> None:
    body = stripe_body({"id": "evt_one", "type": "ping", "created": 1, "data": {"object": {}}})
    answer = requests.post(
        f"{web.url}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=5
    )
    assert answer.status_code == 200
    assert answer.headers["Connection"].lower() == "close"
