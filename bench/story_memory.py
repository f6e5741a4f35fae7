"""Redis bytes per delivered sale of what `refbridge show` keeps, beside the ledger's own.

    .venv/bin/python -m bench.story_memory [--sales 20000]

A fresh embedded Redis (the one `refbridge run` starts) records `--sales` Stripe one-off
checkouts through the intake (`accept_conversion`: ids as long as Stripe's, a sessionId and an
email hash), and each is claimed and delivered with its attempt's story entry, as a worker does
(`mark_delivered`). Then MEMORY USAGE of every key, summed by sort: the story's (`rb:events:`,
`rb:attempts:`, `rb:id:`) and the ledger's (`rb:item:`, `rb:seen:`, memory's buckets). All of
it lives 30 days (the dedup window): multiply by a month's sales for the steady state.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from bench.attribution_memory import token
from bench.harness import write_result
from bridge.conversion import Conversion, Handles
from bridge.delivery import intake, story
from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis


def checkout(rng: random.Random, event_id: str) -> Conversion:
    return Conversion(
        "cs_live_" + token(rng, 58),
        "SALE",
        4900,
        "EUR",
        session_id="rcs_" + token(rng, 22),
        customer_email_hash=token(rng, 64).lower(),
        customer_id="cus_" + token(rng, 14),
        converted_at="2026-12-07T10:00:00Z",
        metadata={
            "source": "stripe",
            "eventId": event_id,
            "eventType": "checkout.session.completed",
        },
        handles=Handles(
            ("stripe:cus:cus_" + token(rng, 14),),
            ("stripe:pi:pi_" + token(rng, 24), "stripe:ch:ch_" + token(rng, 24)),
        ),
    )


def sort_of(key: bytes) -> str:
    for prefix in ("rb:events:", "rb:attempts:", "rb:id:", "rb:item:", "rb:seen:", "rb:mem:"):
        if key.startswith(prefix.encode()):
            return prefix
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sales", type=int, default=20_000)
    sales = parser.parse_args().sales
    rng = random.Random(25)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            usage, keys, seconds = measure(redis.Redis.from_url(server.url), sales, rng)
        finally:
            server.stop()
    report(sales, usage, keys, seconds)


def measure(
    client: redis.Redis, sales: int, rng: random.Random
) -> tuple[Counter[str], Counter[str], float]:
    """Record and deliver `sales` sales; MEMORY USAGE and key counts by sort, and the time."""
    ledger = Ledger(client)
    started = time.monotonic()
    for _ in range(sales):
        event_id = "evt_" + token(rng, 24)
        conversion = checkout(rng, event_id)
        intake.accept_conversion(
            ledger, conversion, provider="stripe", event_id=event_id, received_at=time.time()
        )
        [claim] = ledger.claim([conversion.external_id], lease=30).claims
        entry = story.attempt_entry(1, claim.at, "delivered", 200, took=0.004)
        fields = {"status": "delivered", "conversion_id": "conv_" + token(rng, 20)}
        ledger.mark_delivered(claim, fields, 0.01, entry)
    seconds = time.monotonic() - started
    usage: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        usage[sort_of(key)] += int(client.memory_usage(key, samples=0) or 0)
        keys[sort_of(key)] += 1
    return usage, keys, seconds


def report(sales: int, usage: Counter[str], keys: Counter[str], seconds: float) -> None:
    per_sale = {sort: round(total / sales, 1) for sort, total in sorted(usage.items())}
    story_bytes = sum(per_sale.get(p, 0) for p in ("rb:events:", "rb:attempts:", "rb:id:"))
    ledger_bytes = sum(per_sale.get(p, 0) for p in ("rb:item:", "rb:seen:", "rb:mem:"))
    result = {
        "sales": sales,
        "bytes_per_sale": per_sale,
        "keys_per_sale": {sort: round(n / sales, 2) for sort, n in sorted(keys.items())},
        "story_bytes_per_sale": round(story_bytes, 1),
        "ledger_bytes_per_sale": round(ledger_bytes, 1),
        "story_share_of_total": round(story_bytes / (story_bytes + ledger_bytes), 3),
        "seconds": round(seconds, 1),
    }
    for name, value in result.items():
        print(f"{name:24} {value}")
    write_result("story_memory", result)


if __name__ == "__main__":
    main()
