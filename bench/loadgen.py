"""The load generator: distinct signed Stripe events, pre-built as raw HTTP requests, sent by an
asyncio client over raw sockets (keep-alive when the server allows it, reconnecting when it
answers `Connection: close`, as gunicorn's sync workers always do).

All sockets go to 127.0.0.1. Every loop is bounded by a request count and a deadline.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field

import stripe

from tests.fixtures import stripe_fixture
from tests.signing import SECRET

PATH = "/webhooks/stripe"


@dataclass(frozen=True)
class Request:
    """One pre-built webhook request and the externalId it should become."""

    external_id: str
    raw: bytes


def checkout_requests(count: int, port: int, tag: str) -> list[Request]:
    """`count` distinct, signed `checkout.session.completed` (paid, attributed) webhook requests."""
    event = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    event["id"] = "evt_@@ID@@"
    event["created"] = int(time.time())
    event["data"]["object"].update({"id": "cs_@@ID@@", "metadata": {"rcsid": "rcs_@@ID@@"}})
    template = json.dumps(event, indent=2)
    timestamp = int(time.time())
    out = []
    for i in range(count):
        ident = f"bench_{tag}_{i:06d}"
        body = template.replace("@@ID@@", ident)
        signature = stripe.WebhookSignature.generate_signature_header(
            body, SECRET, timestamp=timestamp
        )
        data = body.encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: {signature}\r\n"
            f"User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(Request("cs_" + ident, head.encode() + data))
    return out


@dataclass
class Sample:
    """One answered request: when it was due / sent, answered, and the status."""

    external_id: str
    status: int
    latency: float  # seconds, from the due time (open loop) or send time (closed loop)
    acked_wall: float  # time.time() when the answer was read


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    total: int = 0  # answers read, warm-up included (for CPU per request)
    started: float = 0.0
    elapsed: float = 0.0

    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200]


class Connection:
    """One client connection to 127.0.0.1:port, reopened whenever the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, raw: bytes) -> int:
        """Send one request and read the whole answer; its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            raise
        status = int(head[9:12])
        lower = head.lower()
        length = 0
        marker = lower.find(b"content-length:")
        if marker >= 0:
            length = int(lower[marker + 15 : lower.find(b"\r\n", marker)])
        if length:
            await self.reader.readexactly(length)
        if b"connection: close" in lower:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _send(conn: Connection, req: Request, run: Run) -> int | None:
    """The answer's status; None, counted as an error, when the connection failed."""
    try:
        return await conn.exchange(req.raw)
    except (OSError, asyncio.IncompleteReadError):
        run.errors += 1
        return None


async def _closed_loop(
    port: int, requests: list[Request], concurrency: int, warmup: float, duration: float
) -> Run:
    run = Run()
    cursor = iter(range(len(requests)))
    t0 = time.perf_counter()
    measure_from, stop_at = t0 + warmup, t0 + warmup + duration

    async def client() -> None:
        conn = Connection(port)
        for index in cursor:
            now = time.perf_counter()
            if now >= stop_at:
                break
            req = requests[index]
            status = await _send(conn, req, run)
            if status is None:
                continue
            done = time.perf_counter()
            run.total += 1
            if now >= measure_from:
                run.samples.append(Sample(req.external_id, status, done - now, time.time()))
        conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    end = min(time.perf_counter(), stop_at)
    run.started, run.elapsed = measure_from, end - measure_from
    return run


def closed_loop(
    port: int,
    requests: list[Request],
    concurrency: int = 16,
    warmup: float = 2.0,
    duration: float = 8.0,
) -> Run:
    """`concurrency` clients, each sending its next request as soon as the last is answered."""
    return asyncio.run(_closed_loop(port, requests, concurrency, warmup, duration))


async def _open_loop(port: int, requests: list[Request], rate: float, max_conns: int) -> Run:
    run = Run()
    idle: list[Connection] = []
    slots = asyncio.Semaphore(max_conns)
    t0 = time.perf_counter() + 0.05

    async def one(index: int, due: float) -> None:
        async with slots:
            conn = idle.pop() if idle else Connection(port)
            req = requests[index]
            status = await _send(conn, req, run)
            if status is None:
                return
            run.total += 1
            # Latency counts from the due time: a late send is the server's delay too.
            run.samples.append(
                Sample(req.external_id, status, time.perf_counter() - due, time.time())
            )
            idle.append(conn)

    tasks = []
    for index in range(len(requests)):
        due = t0 + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for conn in idle:
        conn.close()
    run.started, run.elapsed = t0, time.perf_counter() - t0
    return run


def open_loop(port: int, requests: list[Request], rate: float, max_conns: int = 64) -> Run:
    """Send every request at its due time (`rate` per second), whatever the answers do."""
    return asyncio.run(_open_loop(port, requests, rate, max_conns))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]
