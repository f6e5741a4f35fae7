"""Figure 3: ack p99 while RefCampaign takes 300 ms per answer, bridge ÷ the docs' inline handler.

    .venv/bin/python -m bench.slow_refcampaign

The stand-in (a thread per connection, so 300 ms answers overlap) sleeps 300 ms before every
answer. The inline handler runs as a merchant's own Flask app most likely would, and as figures
1 and 6 run their baselines: on gunicorn's defaults (sync workers, no access log, no config
file) with the same `--workers 2`, not under refbridge's gunicorn configuration (where it ran,
with `--worker-class sync`, until issue 27). The bridge runs the Procfile's web (2 gevent
workers) and worker. Two loads, each applied to both: figure 1's 16 closed-loop clients (the
headline), and an open loop of 4 webhooks/s, below what the inline handler can absorb (2
workers / 0.3 s = 6.7/s), so that the inline p99 is not just queueing.
"""

from __future__ import annotations

from bench.harness import DEFAULT_GUNICORN_ARGS, Stack, write_result
from bench.loadgen import checkout_requests, closed_loop, open_loop, percentile

DELAY = 0.3


def p99_ms(run) -> dict:
    latencies = [s.latency * 1000 for s in run.ok()]
    return {
        "ok": len(run.ok()),
        "non_200": len(run.samples) - len(run.ok()),
        "errors": run.errors,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def both_loads(port: int, tag: str) -> dict:
    closed = closed_loop(port, checkout_requests(20_000, port, tag + "c"), 16, 1.0, 8.0)
    opened = open_loop(port, checkout_requests(40, port, tag + "o"), rate=4.0)
    return {"closed_16": p99_ms(closed), "open_4_per_s": p99_ms(opened)}


def main() -> None:
    with Stack(standin_delay=DELAY) as stack:
        # The docs' handler as a merchant would deploy it: gunicorn's defaults, `-w 2`.
        _, inline_port = stack.web(
            "bench.inline_app:app", name="inline", settings=DEFAULT_GUNICORN_ARGS
        )
        inline = both_loads(inline_port, "inline")
        stack.processes[-1].stop()
        _, port = stack.web()
        stack.worker()
        bridge = both_loads(port, "bridge")
    ratios = {k: round(inline[k]["p99_ms"] / bridge[k]["p99_ms"], 1) for k in bridge}
    write_result(
        "slow_refcampaign",
        {
            "refcampaign_delay_s": DELAY,
            "inline_gunicorn_args": DEFAULT_GUNICORN_ARGS,
            "bridge": bridge,
            "inline_handler": inline,
            "times_faster": ratios,
            "goal_met": all(r >= 20 for r in ratios.values()),
        },
    )


if __name__ == "__main__":
    main()
