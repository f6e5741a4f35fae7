"""Redis memory per remembered sale: INFO memory before and after 100,000 remembered sales.

    .venv/bin/python -m bench.attribution_memory

A fresh embedded Redis (the one `refbridge run` starts: AOF on, noeviction, Redis's default
hash encoding limits) receives what the intake's enqueue script writes for each recorded
conversion (bridge/delivery/memory.py: `entries`), through the same Lua function, in pipelines
of 1,000; no ledger item is written, so the difference is the memory alone. Three kinds of sale,
100,000 each, on a fresh Redis each time, with ids as long as the providers' own:
- a Stripe subscription checkout: `cs_live_` + 58 (externalId), a 26-character session id,
  the subscription, the customer and the first invoice;
- a Stripe one-off checkout: the session, its id, the customer and the payment intent;
- a renewal attributed from memory: the invoice, its payment intent and charge (no customer
  handle: the subscription's still point at the checkout).
Afterwards every bucket's encoding is read (a hash past Redis's limits falls back to a hash
table, several times larger), and a recall of a random 1,000 is timed.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.harness import write_result
from bridge.conversion import Conversion, Handles
from bridge.delivery import memory, scripts
from bridge.ops.embedded_redis import EmbeddedRedis

SALES = 100_000  # --sales changes it (1,000,000: what a year of a large merchant leaves)
BATCH = 1_000
_ALPHABET = string.ascii_letters + string.digits


def token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def subscription_checkout(rng: random.Random) -> Conversion:
    return Conversion(
        "cs_live_" + token(rng, 58),
        "SALE",
        4900,
        "EUR",
        session_id="rcs_" + token(rng, 22),
        handles=Handles(
            ("stripe:sub:sub_" + token(rng, 24), "stripe:cus:cus_" + token(rng, 14)),
            ("stripe:in:in_" + token(rng, 24),),
        ),
    )


def one_off_checkout(rng: random.Random) -> Conversion:
    return Conversion(
        "cs_live_" + token(rng, 58),
        "SALE",
        12900,
        "USD",
        session_id="rcs_" + token(rng, 22),
        handles=Handles(("stripe:cus:cus_" + token(rng, 14),), ("stripe:pi:pi_" + token(rng, 24),)),
    )


def renewal(rng: random.Random) -> Conversion:
    invoice = "in_" + token(rng, 24)
    return Conversion(
        invoice,
        "SALE",
        4900,
        "EUR",
        session_id="rcs_" + token(rng, 22),
        attributed_from="cs_live_" + token(rng, 58),
        handles=Handles(
            ("stripe:sub:sub_" + token(rng, 24), "stripe:cus:cus_" + token(rng, 14)),
            (
                "stripe:in:" + invoice,
                "stripe:pi:pi_" + token(rng, 24),
                "stripe:ch:ch_" + token(rng, 24),
            ),
        ),
    )


def measure(kind: str, make: Any, sales: int) -> dict[str, Any]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder)).start()
        try:
            client = redis.Redis.from_url(server.url)
            remember = client.register_script(scripts.REMEMBER_ONLY)
            client.set("warm", "1")
            before = int(client.info("memory")["used_memory"])
            entries = handles = 0
            sample: list[Conversion] = []
            for start in range(0, sales, BATCH):
                pipe = client.pipeline(transaction=False)
                for _ in range(BATCH):
                    sale = make(rng)
                    writes = memory.entries(sale)
                    found = writes.entries + writes.customers
                    entries += sum(1 for entry in found if entry[2])
                    handles += len(sale.handles.payment) + (
                        0 if sale.attributed_from else len(sale.handles.customer)
                    )
                    remember(args=writes.args(), client=pipe)
                    if start == 0 and len(sample) < 1000:
                        sample.append(sale)
                pipe.execute()
            after = int(client.info("memory")["used_memory"])
            encodings: dict[str, int] = {}
            buckets = 0
            for key in client.scan_iter(match=memory.PREFIX + "*", count=2000):
                buckets += 1
                name = client.object("encoding", key).decode()
                encodings[name] = encodings.get(name, 0) + 1
            store = memory.Memory(client)
            started = time.perf_counter()
            found_back = sum(store.recall(s.handles.payment[:1]) is not None for s in sample)
            recall_us = (time.perf_counter() - started) / len(sample) * 1e6
        finally:
            server.stop()
    return {
        "kind": kind,
        "sales": sales,
        "entries": entries,
        "handles": handles,
        "buckets": buckets,
        "encodings": encodings,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_sale": round((after - before) / sales, 1),
        "recalled": found_back,
        "recall_round_trip_us": round(recall_us, 1),
    }


KINDS = {
    "subscription": ("subscription checkout", subscription_checkout),
    "one-off": ("one-off checkout", one_off_checkout),
    "renewal": ("renewal from memory", renewal),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=SALES)
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    args = parser.parse_args()
    results = [measure(*KINDS[kind], args.sales) for kind in args.kinds]
    for row in results:
        print(
            f"{row['kind']:<22} {row['bytes_per_sale']:>7} bytes/sale  "
            f"{row['entries'] / row['sales']:.2f} fields/sale  {row['buckets']} buckets "
            f"{row['encodings']}  recall {row['recall_round_trip_us']} µs "
            f"({row['recalled']}/1000 found)"
        )
    suffix = "" if args.sales == SALES else f"_{args.sales}"
    write_result(f"attribution_memory{suffix}", {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
