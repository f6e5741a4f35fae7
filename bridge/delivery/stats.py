"""The counters kept in Redis: one hash, a field per counter and label set.

Counters live in one Redis hash, so every process (gunicorn workers, Celery workers on any
machine) adds to the same numbers, in the same round trip as the state change they count.
A field is `name:label=value,label=value`; label values are bounded snake_case words.
"""

from __future__ import annotations

import re
from collections import defaultdict

STATS = "rb:stats"
# The counter of PayPal REST webhook verifications (the IPN's are `verifications`).
WEBHOOK_VERIFICATIONS = "paypal_webhook_verifications"
LATENCY = "delivery_latency"
LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    21600,
    86400,
)
_UNSAFE = re.compile(r"[^a-z0-9_]")


def stat(name: str, **labels: str) -> str:
    """The Redis hash field of one counter."""
    clean = {k: _UNSAFE.sub("_", v.lower())[:64] for k, v in labels.items() if v}
    return name + ":" + ",".join(f"{k}={v}" for k, v in sorted(clean.items()))


def parse_stat(field: str) -> tuple[str, dict[str, str]]:
    """The counter name and labels of a hash field."""
    name, _, rest = field.partition(":")
    labels = dict(pair.split("=", 1) for pair in rest.split(",") if "=" in pair)
    return name, labels


def latency_fields(seconds: float) -> tuple[str, str, str]:
    """The bucket, sum and count fields a delivery latency adds to."""
    bucket = next((b for b in LATENCY_BUCKETS if seconds <= b), float("inf"))
    return f"{LATENCY}:le={bucket}", f"{LATENCY}:sum", f"{LATENCY}:count"


def totals(counters: dict[str, str]) -> dict[str, int]:
    """Counter values summed per `name.outcome` (what `refbridge status` shows)."""
    out: dict[str, int] = defaultdict(int)
    for field, value in counters.items():
        name, labels = parse_stat(field)
        if "outcome" in labels:
            out[f"{name}.{labels['outcome']}"] += int(float(value))
    return dict(out)
