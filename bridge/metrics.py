"""Metrics kept in Redis and exposed with the official Prometheus client.

Counters live in one Redis hash, so every process (gunicorn workers, Celery workers on any
machine) adds to the same numbers and `GET /metrics` on any web process shows the whole
system: no multiprocess directory, nothing lost when a process restarts.
A field is `name:label=value,label=value`; label values are bounded snake_case words.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

STATS = "rb:stats"
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
COUNTERS = {
    "webhooks": (
        "refbridge_webhooks",
        "Webhook and IPN messages received, by provider and outcome",
        ("provider", "outcome", "reason"),
    ),
    "postbacks": (
        "refbridge_postbacks",
        "Postback attempts to RefCampaign, by outcome",
        ("outcome", "reason"),
    ),
    "verifications": (
        "refbridge_ipn_verifications",
        "IPN verification attempts, by outcome",
        ("outcome",),
    ),
}
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


class RedisCollector(Collector):
    """Reads counters and queue gauges from Redis at scrape time."""

    def __init__(self, read_state: Any) -> None:
        self.read_state = read_state

    def collect(self) -> Iterator[Metric]:
        counters, gauges = self.read_state()
        families = {
            name: CounterMetricFamily(metric, doc, labels=list(labels))
            for name, (metric, doc, labels) in COUNTERS.items()
        }
        for field, value in counters.items():
            name, labels = parse_stat(field)
            if name in families:
                order = COUNTERS[name][2]
                families[name].add_metric([labels.get(k, "") for k in order], float(value))
        yield from families.values()
        yield _latency(counters)
        for name, (doc, value) in gauges.items():
            gauge = GaugeMetricFamily(f"refbridge_{name}", doc)
            gauge.add_metric([], float(value))
            yield gauge


def _latency(counters: dict[str, str]) -> HistogramMetricFamily:
    cumulative, buckets = 0.0, []
    for bound in (*LATENCY_BUCKETS, float("inf")):
        cumulative += float(counters.get(f"{LATENCY}:le={bound}", 0))
        buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
    return HistogramMetricFamily(
        "refbridge_delivery_latency_seconds",
        "Time from webhook received to postback accepted by RefCampaign",
        buckets=buckets,
        sum_value=float(counters.get(f"{LATENCY}:sum", 0)),
    )
