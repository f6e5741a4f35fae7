"""What REDIS_MIN_REPLICAS=1 costs a webhook: figure 1 (web alone) with a local replica, the
web at REDIS_MIN_REPLICAS=0 beside one at 1, in the same run.

    .venv/bin/python -m bench.replica_cost [--rounds 5]

One embedded Redis and a replica of it (the same binary, `REPLICAOF`, on this machine: the
replica's network round trip is loopback's; across machines add that round trip to each
webhook). Two gunicorn web processes with the Procfile's settings serve the same Redis, one
waiting for the replica (`WAIT 1` after each record), one not; 16 keep-alive clients post
distinct signed checkout events to each in alternating windows (as figure 1 does bare/bridge),
so that the machine's drift hits both alike. No worker runs: this is the acknowledgment alone.
"""

from __future__ import annotations

import argparse
import time

import redis

from bench.ack_throughput import summary, window
from bench.harness import Stack, write_result
from bench.loadgen import checkout_requests
from bridge.ops.embedded_redis import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    seconds = args.rounds * (args.warmup + args.duration)
    with Stack() as stack:
        replica = EmbeddedRedis(stack.dir / "replica").start()
        try:
            redis.Redis(port=replica.port).replicaof("127.0.0.1", stack.redis.port)
            primary = redis.Redis(port=stack.redis.port)
            deadline = time.monotonic() + 30
            while primary.info("replication")["connected_slaves"] < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not attach")
                time.sleep(0.1)
            ports = {}
            for replicas in ("0", "1"):
                stack.env["REDIS_MIN_REPLICAS"] = replicas
                ports[replicas] = stack.web(name=f"web_min_replicas_{replicas}")[1]
            apps = {
                name: (port, checkout_requests(int(seconds * 4000), port, f"min{name}"))
                for name, port in ports.items()
            }
            used = {name: 0 for name in apps}
            windows: dict[str, list[dict]] = {name: [] for name in apps}
            for i in range(args.rounds):
                for name in ("0", "1") if i % 2 == 0 else ("1", "0"):
                    port, requests = apps[name]
                    result = window(stack, port, requests[used[name] :], args)
                    used[name] += result["used"]
                    windows[name].append(result)
            lag = primary.info("replication").get("slave0", {})
        finally:
            replica.kill()
    without, waiting = summary(windows["0"]), summary(windows["1"])
    write_result(
        "replica_cost",
        {
            "concurrency": args.concurrency,
            "windows": f"{args.rounds} per web, {args.warmup}s warm-up + {args.duration}s each",
            "min_replicas_0": without,
            "min_replicas_1": waiting,
            "throughput_ratio_1_over_0": round(
                waiting["throughput_rps"] / without["throughput_rps"], 3
            ),
            "p50_added_ms": round(waiting["p50_ms"] - without["p50_ms"], 2),
            "p99_added_ms": round(waiting["p99_ms"] - without["p99_ms"], 2),
            "replica_at_end": lag,
        },
    )


if __name__ == "__main__":
    main()
