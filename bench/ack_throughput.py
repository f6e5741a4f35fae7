"""Figure 1: ack throughput and p99 of /webhooks/stripe ÷ a bare Flask endpoint, same gunicorn.

    .venv/bin/python -m bench.ack_throughput [--gunicorn-args "--worker-class gthread --threads 4"]

16 concurrent keep-alive clients (closed loop), distinct signed checkout.session.completed
events. The bridge runs as deployed: web + Celery worker + stand-in, so the worker's CPU use
(delivering what the web accepts) competes with the web process, as it does on a 2-core box.
"""

from __future__ import annotations

import argparse
import shlex

from bench.harness import Stack, cpu_per_request, write_result
from bench.loadgen import checkout_requests, closed_loop, percentile


def measure(
    stack: Stack, port: int, requests: list, concurrency: int, warmup: float, duration: float
) -> dict:
    before = stack.cpu_seconds()
    run = closed_loop(port, requests, concurrency, warmup, duration)
    cpu = cpu_per_request(before, stack.cpu_seconds(), run.total)
    latencies = [s.latency * 1000 for s in run.ok()]
    return {
        "requests_ok": len(run.ok()),
        "non_200": len(run.samples) - len(run.ok()),
        "errors": run.errors,
        "throughput_rps": round(run.throughput(), 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "cpu_ms_per_request": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--gunicorn-args", default="", help="extra gunicorn args for both apps")
    parser.add_argument("--no-worker", action="store_true", help="web process alone")
    args = parser.parse_args()
    extra = shlex.split(args.gunicorn_args)
    # Enough distinct events that none repeats at the bare endpoint's rate.
    count = 40_000
    with Stack() as stack:
        _, bare_port = stack.web("bench.bare_app:app", name="bare", extra=extra)
        bare_reqs = checkout_requests(count, bare_port, "bare")
        bare = measure(stack, bare_port, bare_reqs, args.concurrency, args.warmup, args.duration)
        stack.processes[-1].stop()
        _, web_port = stack.web(extra=extra)
        if not args.no_worker:
            stack.worker()
        reqs = checkout_requests(count, web_port, "ack")
        bridge = measure(stack, web_port, reqs, args.concurrency, args.warmup, args.duration)
        delivered = stack.standin.count()["accepted"]
    ratio = bridge["throughput_rps"] / bare["throughput_rps"]
    write_result(
        "ack_throughput"
        + ("_" + "_".join(a.strip("-") for a in extra) if extra else "")
        + ("_noworker" if args.no_worker else ""),
        {
            "gunicorn_args": ["-c", "python:bridge.gunicorn_conf", "--workers", "2", *extra],
            "worker": not args.no_worker,
            "concurrency": args.concurrency,
            "bridge": bridge,
            "bare_flask": bare,
            "delivered_during_run": delivered,
            "ratio": round(ratio, 3),
            "goal_ratio_met": ratio >= 0.6,
            "goal_p99_met": bridge["p99_ms"] <= 25,
        },
    )


if __name__ == "__main__":
    main()
