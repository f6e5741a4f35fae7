"""Metrics for Prometheus: the Redis counters (bridge.delivery.stats) and queue gauges.

`GET /metrics` on any web process shows the whole system: no multiprocess directory, nothing
lost when a process restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bridge.catchup.run import last_runs
from bridge.delivery.stats import LATENCY, LATENCY_BUCKETS, parse_stat

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
    "refunds": (
        "refbridge_refunds",
        "Refunds and lost chargebacks, by outcome (sent, already_refunded, waiting, "
        "unknown_payment, not_sent, retried, dead_lettered)",
        ("outcome", "reason"),
    ),
    "verifications": (
        "refbridge_ipn_verifications",
        "IPN verification attempts, by outcome",
        ("outcome",),
    ),
    "catchup_events": (
        "refbridge_catchup_events",
        "Events read from the providers' history by catch-up, by provider and outcome",
        ("provider", "outcome", "reason"),
    ),
    "catchup_runs": (
        "refbridge_catchup_runs",
        "Catch-up runs, by provider and outcome (completed, failed)",
        ("provider", "outcome"),
    ),
    "paypal_webhook_verifications": (
        "refbridge_paypal_webhook_verifications",
        "PayPal REST webhook verification attempts (verify-webhook-signature), by outcome",
        ("outcome",),
    ),
    "worker": (
        "refbridge_worker_events",
        "Worker self-healing events (consumer_stuck: a worker restarted itself), by outcome",
        ("outcome",),
    ),
}


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
        yield from _catchup(counters)
        for name, (doc, value) in gauges.items():
            gauge = GaugeMetricFamily(f"refbridge_{name}", doc)
            gauge.add_metric([], float(value))
            yield gauge


def _catchup(counters: dict[str, str]) -> Iterator[Metric]:
    """When each provider's last catch-up run ended, and what it recovered."""
    at = GaugeMetricFamily(
        "refbridge_catchup_last_run_timestamp_seconds",
        "When the last catch-up run ended (Unix time), by provider",
        labels=["provider"],
    )
    recovered = GaugeMetricFamily(
        "refbridge_catchup_last_run_recovered",
        "Events the last catch-up run recorded that no webhook had brought, by provider",
        labels=["provider"],
    )
    for provider, run in sorted(last_runs(counters).items()):
        at.add_metric([provider], float(run.get("finishedAt") or 0))
        recovered.add_metric([provider], float(run.get("newlyRecorded") or 0))
    yield at
    yield recovered


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
