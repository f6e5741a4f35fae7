"""Run every figure of BENCHMARKS.md in turn and print one summary table.

    .venv/bin/python -m bench.run_all

Each figure runs as its own process (`python -m bench.<module>`) with fresh Redis, stand-in,
gunicorn and Celery processes; results land in bench/results/<figure>.json.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.harness import ROOT


def _ack(r: dict) -> tuple[str, bool]:
    return (
        f"ratio {r['ratio']} (goal >= 0.7 vs gunicorn defaults; "
        f"rounds {r['ratio_per_round']['min']}"
        f"-{r['ratio_per_round']['max']}), p99 {r['bridge']['p99_ms']} ms (goal <= 25); "
        f"bridge {r['bridge']['throughput_rps']}/s vs bare {r['bare_flask']['throughput_rps']}/s",
        r["goal_ratio_met"] and r["goal_p99_met"],
    )


# (title, module, its arguments, result file, summary of the result)
FIGURES = [
    (
        "1 ack throughput, web alone",
        "ack_throughput",
        ["--no-worker"],
        "ack_throughput_noworker",
        _ack,
    ),
    ("1 ack throughput, web + worker", "ack_throughput", [], "ack_throughput", _ack),
    (
        "2 drain rate",
        "drain_rate",
        [],
        "drain_rate",
        lambda r: (
            f"ratio {r['ratio']} (goal >= 1.0); {r['bridge_drain_per_s']}/s vs "
            f"sequential {r['sequential_session_per_s']}/s",
            r["goal_met"],
        ),
    ),
    (
        "3 ack p99, 300 ms RefCampaign",
        "slow_refcampaign",
        [],
        "slow_refcampaign",
        lambda r: (f"{r['times_faster']} x faster (goal >= 20)", r["goal_met"]),
    ),
    (
        "4 postback latency @200/s",
        "postback_latency",
        [],
        "postback_latency",
        lambda r: (
            f"p95 {r['postback_latency_ms']['p95']} ms (goal <= 20), "
            f"p99 {r['postback_latency_ms']['p99']} ms (goal <= 50)",
            r["goal_met"],
        ),
    ),
    (
        "6 pipeline CPU per conversion + postback latency @200/s",
        "pipeline",
        [],
        "pipeline",
        lambda r: (
            f"inline/bridge CPU per conversion {r['ratio_inline_over_bridge']} (goal >= 0.8): "
            f"{r['inline_cpu_us_per_conversion']} vs {r['bridge_cpu_us_per_conversion']} us; "
            f"at {r['latency_at_rate']['rate_per_s']}/s "
            f"{r['at_rate']['ratio_inline_over_bridge']}; "
            f"postback p95 {r['latency_at_rate']['postback_latency_ms']['p95']} ms (goal <= 20), "
            f"p99 {r['latency_at_rate']['postback_latency_ms']['p99']} ms (goal <= 50)",
            r["goal_cpu_met"] and r["goal_latency_met"],
        ),
    ),
    (
        "catch-up over 10,000 Stripe events",
        "catchup",
        [],
        "catchup",
        lambda r: (
            f"{r['runs'][0]['events_per_second']} events/s (throttled to "
            f"{r['rate_limit_requests_per_second']:g} requests/s), "
            f"{r['runs'][0]['redis_round_trips_per_event']} Redis round trips per event; "
            f"a second run {r['runs'][1]['events_per_second']} events/s (no goal)",
            True,
        ),
    ),
    (
        "5 memory",
        "memory",
        [],
        "memory",
        lambda r: (
            f"peak {r['peak_rss_mib']} MiB, growth 5k->10k {r['growth_5000_to_10000_mib']} MiB",
            r["goal_met"],
        ),
    ),
]


def main() -> int:
    rows = []
    for title, module, args, result_name, summarise in FIGURES:
        print(f"== {title}: python -m bench.{module} {' '.join(args)}", flush=True)
        command = [sys.executable, "-m", f"bench.{module}", *args]
        done = subprocess.run(command, cwd=ROOT, timeout=300)
        if done.returncode != 0:
            rows.append((title, "FAILED to run", False))
            continue
        result = json.loads((ROOT / "bench" / "results" / f"{result_name}.json").read_text())
        text, met = summarise(result)
        rows.append((title, text, met))
    print()
    for title, text, met in rows:
        print(f"{'MET ' if met else 'MISS'}  {title}: {text}")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
