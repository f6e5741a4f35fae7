"""Figure 6: CPU per conversion of the whole pipeline, refbridge ÷ the docs' inline handler,
and webhook → postback latency at a steady 200/s, in one run.

    .venv/bin/python -m bench.pipeline [--inline docs|lean] [--rounds 3] [--conversions 3000]
        [--latency-seconds 10] [--profile] [--worker-niced]

Both sides run for the whole run and take turns in chunks (inline, bridge, bridge, inline, …).
Every chunk is the same work: 16 closed-loop clients post exactly `--conversions` distinct
signed checkout.session.completed events to one side (not a fixed time, in which the faster
side would take more). A conversion counts when it was acknowledged with a 200 AND its
postback reached the RefCampaign stand-in (which answers at once). CPU is read from /proc
(user + system) for every process of the side over the whole chunk, and the chunk ends only
when the side has finished all of its work: every postback arrived, then (bridge) the ledger
has recorded every outcome and the Celery queue is empty, then the side's processes have been
idle for half a second (under 20 ms of CPU in 0.5 s). So the worker's bookkeeping after the last
postback (the last batch's finish script, the task's return to the main process) counts in
the chunk of the conversions it belongs to, never in the next chunk nor in the other side's.

- inline, the baseline: the RefCampaign docs' handler as written (`--inline docs`,
  `bench/inline_app.py`: `stripe.Webhook.construct_event`, then a new `requests.post`, so a
  new connection, per postback inside the request) or the same handler written lean
  (`--inline lean`, `bench/inline_lean_app.py`: `verify_header` and `json.loads`, one pooled
  `requests.Session`) on gunicorn's defaults with `-w 2` (sync workers, no access log). The
  goal (inline ÷ refbridge ≥ 0.8) is set against the docs' handler; the lean figure is
  reported beside it, without a goal.
- bridge: the web and the Celery worker with the Procfile's settings, as deployed (no nice; a
  niced worker batches a backlog that a deployed one does not; `--worker-niced` starts it as
  `refbridge run` does, at nice 10): main process and pool children apart, and Redis
  (`appendfsync everysec`).

The load generator (this process) and the stand-in serve both sides; their CPU is reported
apart, never counted. Then an open loop at `--rate` (200/s) measures webhook → postback latency
against the bridge as figure 4 does, and the same number of webhooks at the same rate goes to
the inline handler, each side settled as above, for CPU per conversion at that rate.
`--profile` adds one more bridge chunk, not counted, under py-spy (every Python process of the
bridge) and prints where each spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time

import psutil
import redis

from bench import postback_latency
from bench.harness import DEFAULT_GUNICORN_ARGS, ROOT, Process, Stack, write_result
from bench.loadgen import Request, checkout_requests, closed_loop, open_loop
from bench.profile import top_functions
from bridge.delivery.keys import UNDELIVERED
from bridge.delivery.publish import QUEUE

RATIO_GOAL = 0.8  # refbridge may cost at most 1.25× the inline handler per conversion


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def _tree_cpu(proc: Process) -> tuple[float, float]:
    """(main process, sum of its live descendants) CPU seconds."""
    tree = proc.tree()
    if not tree:
        return 0.0, 0.0
    return _cpu(tree[0].pid), sum(_cpu(p.pid) for p in tree[1:])


class Sides:
    """CPU readings of every process, by role."""

    def __init__(self, stack: Stack, inline: Process, web: Process, worker: Process) -> None:
        self.stack, self.inline, self.web, self.worker = stack, inline, web, worker

    def read(self) -> dict[str, float]:
        inline_main, inline_workers = _tree_cpu(self.inline)
        web_main, web_workers = _tree_cpu(self.web)
        worker_main, pool = _tree_cpu(self.worker)
        redis_pid = self.stack.redis.process.pid if self.stack.redis.process else 0
        return {
            "inline": inline_main + inline_workers,
            "web": web_main + web_workers,
            "worker_main": worker_main,
            "pool_children": pool,
            "redis": _cpu(redis_pid),
            "standin": _cpu(self.stack.standin.proc.pid),
            "loadgen": _cpu(os.getpid()),
        }


BRIDGE_ROLES = ("web", "worker_main", "pool_children", "redis")
ROLES = {"inline": ("inline",), "bridge": BRIDGE_ROLES}
# A side has settled when its processes together used at most QUIET_CPU seconds of CPU over the
# last QUIET_WINDOW seconds (psutil reads CPU time in 10 ms ticks; idle, a side ticks about once
# in a few seconds, so this allows two stray ticks and no work).
QUIET_WINDOW = 0.5
QUIET_CPU = 0.02
SETTLE_TIMEOUT = 30.0
# Longest a chunk's load may run: a chunk ends when its requests are all answered.
CHUNK_DEADLINE = 600.0


def settle(sides: Sides, side: str) -> tuple[dict[str, float], bool, float]:
    """Wait until `side`'s processes are idle; (the CPU reading then, settled, seconds waited)."""
    roles = ROLES[side]
    started = time.perf_counter()
    reading = sides.read()
    history = [(started, sum(reading[r] for r in roles))]
    while True:
        time.sleep(0.1)
        now, reading = time.perf_counter(), sides.read()
        total = sum(reading[r] for r in roles)
        history.append((now, total))
        old = [cpu for at, cpu in history if at <= now - QUIET_WINDOW]
        if old and total - old[-1] <= QUIET_CPU:
            return reading, True, now - started
        if now - started > SETTLE_TIMEOUT:
            return reading, False, now - started


def wait_ledger_done(stack: Stack, probes: dict[str, int], timeout: float = 120.0) -> None:
    """Until the ledger holds no undelivered item and the Celery queue no task: every outcome
    recorded, no task message left to take. `probes` counts the commands this sent."""
    client = redis.Redis.from_url(stack.redis.url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(UNDELIVERED)
            pipe.llen(QUEUE)
            undelivered, queued = pipe.execute()
            probes["zcard"] = probes.get("zcard", 0) + 1
            probes["llen"] = probes.get("llen", 0) + 1
            if undelivered == 0 and queued == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{undelivered} undelivered, {queued} tasks after {timeout}s")
            time.sleep(0.05)
    finally:
        client.close()


def chunk(
    stack: Stack, sides: Sides, side: str, port: int, reqs: list[Request], args: argparse.Namespace
) -> dict:
    """One side's chunk: every request of `reqs`, then every postback, then (bridge) every
    outcome recorded, then the side idle; CPU from before the first request to then."""
    roles = ROLES[side]
    accepted_before = stack.standin.count()["accepted"]
    calls_before = redis_calls(stack)
    before = sides.read()
    started = time.perf_counter()
    run = closed_loop(port, reqs, args.concurrency, 0.0, CHUNK_DEADLINE)
    acked = sum(1 for s in run.samples if s.status == 200)
    stack.standin.wait_accepted(accepted_before + acked, timeout=120)
    at_last_postback = sides.read()
    to_last_postback = time.perf_counter() - started
    probes: dict[str, int] = {}
    if side == "bridge":
        wait_ledger_done(stack, probes)
    after, settled, settle_s = settle(sides, side)
    elapsed = time.perf_counter() - started
    calls = redis_calls(stack)
    delivered = stack.standin.count()["accepted"] - accepted_before
    return {
        "side": side,
        "sent": len(reqs),
        "acked": acked,
        "non_200": len(run.samples) - acked,
        "errors": run.errors,
        "delivered": delivered,
        "conversions": min(acked, delivered),
        "seconds_to_last_postback": round(to_last_postback, 2),
        "seconds": round(elapsed, 2),
        "settled": settled,
        "settle_seconds": round(settle_s, 2),
        "cpu_s": {k: after[k] - before[k] for k in after},
        # Counted here only because the chunk waits for the side to finish: the old chunk ended
        # at the last postback's arrival and left this to whatever ran next.
        "cpu_s_after_last_postback": sum(after[r] - at_last_postback[r] for r in roles),
        "redis_calls": {k: v - calls_before.get(k, 0) - probes.get(k, 0) for k, v in calls.items()},
    }


def redis_calls(stack: Stack) -> dict[str, int]:
    """Commands Redis has run so far, by name (those run inside scripts included)."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def calls_per_conversion(chunks: list[dict]) -> dict[str, float]:
    """Redis commands per conversion over `chunks`, the most frequent first (INFO excluded)."""
    conversions = max(sum(c["conversions"] for c in chunks), 1)
    total: dict[str, int] = {}
    for c in chunks:
        for name, n in c["redis_calls"].items():
            total[name] = total.get(name, 0) + n
    per = {k: round(v / conversions, 2) for k, v in total.items() if k != "info"}
    return dict(sorted(((k, v) for k, v in per.items() if v >= 0.01), key=lambda kv: -kv[1]))


def us_per_conversion(chunks: list[dict]) -> dict[str, float]:
    conversions = sum(c["conversions"] for c in chunks)
    roles = chunks[0]["cpu_s"].keys()
    return {
        r: round(1e6 * sum(c["cpu_s"][r] for c in chunks) / max(conversions, 1), 1) for r in roles
    }


def at_rate(bridge_cpu: dict[str, float], conversions: int, inline_s: float) -> dict:
    """CPU per conversion (µs) of each side at the latency phase's steady rate."""
    by_process = {k: round(1e6 * bridge_cpu[k] / max(conversions, 1), 1) for k in bridge_cpu}
    bridge = round(sum(by_process[r] for r in BRIDGE_ROLES), 1)
    return {
        "inline_cpu_us_per_conversion": round(1e6 * inline_s, 1),
        "bridge_cpu_us_per_conversion": bridge,
        "ratio_inline_over_bridge": round(1e6 * inline_s / bridge, 3),
        "bridge_us_per_conversion_by_process": {r: by_process[r] for r in BRIDGE_ROLES},
        "not_counted_us_per_conversion": {k: by_process[k] for k in ("standin", "loadgen")},
    }


def profile(stack: Stack, web: Process, worker: Process, port: int, seconds: int) -> dict:
    """py-spy over every Python process of the bridge during one more (uncounted) bridge chunk
    of `seconds` of load, and the worker's drain after it."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    targets = [(f"web-{p.pid}", p.pid) for p in web.tree()[1:]]
    tree = worker.tree()
    targets += [("worker-main", tree[0].pid)] + [(f"pool-{p.pid}", p.pid) for p in tree[1:]]
    spies = []
    for role, pid in targets:
        path = out_dir / f"profile-pipeline-{role}.txt"
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(2 * seconds), "--rate", "100"]
        cmd += ["--nonblocking", "--format", "raw", "--output", str(path)]
        quiet = subprocess.DEVNULL
        spies.append((role, path, subprocess.Popen(cmd, stdout=quiet, stderr=quiet)))
    reqs = checkout_requests(seconds * 2500, port, "prof")
    closed_loop(port, reqs, 16, 0.0, seconds)
    for _, _, spy_proc in spies:
        spy_proc.wait(2 * seconds + 30)
    found = {}
    for role, path, _ in spies:
        if path.exists():
            total, top = top_functions(path, 30)
            found[role] = {"samples": total, "top": [(f[:160], n) for f, n in top]}
    return found


INLINE_APPS = {"docs": "bench.inline_app:app", "lean": "bench.inline_lean_app:app"}
INLINE_WRITTEN = {
    "docs": "as the RefCampaign docs write it: stripe.Webhook.construct_event, then "
    "requests.post (a new connection per postback) inside the request",
    "lean": "the docs' handler written lean: stripe.WebhookSignature.verify_header and "
    "json.loads, then one pooled requests.Session inside the request",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="inline/bridge chunk pairs")
    parser.add_argument(
        "--conversions", type=int, default=3000, help="webhooks per chunk, the same on each side"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase, webhooks/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true", help="py-spy one more bridge chunk")
    parser.add_argument("--inline", choices=("docs", "lean"), default="docs")
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="experiments: one more argument for the worker (e.g. --worker-arg=--pool=threads)",
    )
    parser.add_argument(
        "--worker-niced",
        action="store_true",
        help="the worker at nice 10, as `refbridge run` starts it (not as the Procfile deploys)",
    )
    args = parser.parse_args()
    per_chunk = args.conversions
    load_before = os.getloadavg()
    with Stack() as stack:
        inline, inline_port = stack.web(
            INLINE_APPS[args.inline], name="inline", settings=DEFAULT_GUNICORN_ARGS
        )
        web, web_port = stack.web()
        worker = stack.worker(extra=args.worker_arg, shares_cpu=args.worker_niced)
        sides = Sides(stack, inline, web, worker)
        count = args.rounds * per_chunk
        reqs = {
            "inline": (inline_port, checkout_requests(count, inline_port, "in")),
            "bridge": (web_port, checkout_requests(count, web_port, "br")),
        }
        used = {"inline": 0, "bridge": 0}
        chunks: list[dict] = []
        for side in ("inline", "bridge"):  # both sides idle before the first chunk
            settle(sides, side)
        for i in range(args.rounds * 2):
            side = ("inline", "bridge")[(i + i // 2) % 2]  # inline, bridge, bridge, inline, …
            port, all_reqs = reqs[side]
            done = chunk(
                stack, sides, side, port, all_reqs[used[side] : used[side] + per_chunk], args
            )
            used[side] += per_chunk
            chunks.append(done)
            print(
                f"{side}: {done['conversions']} conversions in {done['seconds']} s "
                f"(settled {done['settled']} after {done['settle_seconds']} s)",
                flush=True,
            )
        # The same number of webhooks at the same steady rate to each side, each side settled
        # (every outcome recorded, its processes idle) before its reading ends.
        steady_total = int(args.rate * (args.latency_seconds + 1))
        stack.standin.reset()
        before = sides.read()
        latency = postback_latency.measure(stack, web_port, args.rate, args.latency_seconds)
        wait_ledger_done(stack, {})
        after, bridge_settled, _ = settle(sides, "bridge")
        steady = {k: v - before[k] for k, v in after.items()}
        steady_count = stack.standin.count()["accepted"]
        before = sides.read()
        inline_reqs = checkout_requests(steady_total, inline_port, "inr")
        inline_run = open_loop(inline_port, inline_reqs, args.rate)
        after, inline_settled, _ = settle(sides, "inline")
        inline_steady = (after["inline"] - before["inline"]) / max(len(inline_run.ok()), 1)
        spied = profile(stack, web, worker, web_port, 4) if args.profile else None
    load_after = os.getloadavg()
    inline_chunks = [c for c in chunks if c["side"] == "inline"]
    bridge_chunks = [c for c in chunks if c["side"] == "bridge"]
    inline_us, bridge_us = us_per_conversion(inline_chunks), us_per_conversion(bridge_chunks)
    inline_total = inline_us["inline"]
    bridge_total = round(sum(bridge_us[r] for r in BRIDGE_ROLES), 1)
    ratio = inline_total / bridge_total
    per_round = []
    for c in chunks:
        us = us_per_conversion([c])
        per_round.append(round(sum(us[r] for r in ROLES[c["side"]])))
    bridge_conversions = sum(c["conversions"] for c in bridge_chunks)
    tail_us = 1e6 * sum(c["cpu_s_after_last_postback"] for c in bridge_chunks)
    result = {
        "load_average_before_after": [
            [round(x, 2) for x in load_before],
            [round(x, 2) for x in load_after],
        ],
        "worker_at_nice_10": args.worker_niced,
        "inline_handler": INLINE_APPS[args.inline],
        "inline_handler_written": INLINE_WRITTEN[args.inline],
        "inline_gunicorn_args": DEFAULT_GUNICORN_ARGS,
        "worker_extra_args": args.worker_arg,
        "chunks": (
            f"{args.rounds * 2}, {per_chunk} webhooks each from {args.concurrency} closed-loop "
            "clients, inline first; each ends when its side has finished and is idle"
        ),
        "conversions_per_chunk": per_chunk,
        "equal_work": all(c["conversions"] == per_chunk for c in chunks),
        "every_chunk_settled": all(c["settled"] for c in chunks),
        "inline_cpu_us_per_conversion": inline_total,
        "bridge_cpu_us_per_conversion": bridge_total,
        "ratio_inline_over_bridge": round(ratio, 3),
        "bridge_us_per_conversion_by_process": {r: bridge_us[r] for r in BRIDGE_ROLES},
        "bridge_us_per_conversion_after_last_postback": round(
            tail_us / max(bridge_conversions, 1), 1
        ),
        "bridge_redis_commands_per_conversion": calls_per_conversion(bridge_chunks),
        "per_chunk_us": list(zip((c["side"] for c in chunks), per_round, strict=True)),
        "per_chunk_seconds": [c["seconds"] for c in chunks],
        "not_counted_us_per_conversion": {
            "inline_chunks": {k: inline_us[k] for k in ("standin", "loadgen")},
            "bridge_chunks": {k: bridge_us[k] for k in ("standin", "loadgen")},
        },
        "conversions": {
            "inline": sum(c["conversions"] for c in inline_chunks),
            "bridge": bridge_conversions,
        },
        # First request to last postback (the settling after it left out).
        "throughput_per_s": {
            "inline": round(
                sum(c["conversions"] for c in inline_chunks)
                / sum(c["seconds_to_last_postback"] for c in inline_chunks),
                1,
            ),
            "bridge_acked_and_delivered": round(
                bridge_conversions / sum(c["seconds_to_last_postback"] for c in bridge_chunks), 1
            ),
        },
        "non_200": sum(c["non_200"] for c in chunks),
        "errors": sum(c["errors"] for c in chunks),
        "latency_at_rate": latency,
        "at_rate": {
            **at_rate(steady, steady_count, inline_steady),
            "webhooks_per_side": steady_total,
            "settled": bridge_settled and inline_settled,
        },
        "goal_cpu": f"inline ÷ refbridge >= {RATIO_GOAL} against the docs' handler",
        # The lean handler's figure is reported beside the goal's, not held to it.
        "goal_cpu_met": ratio >= RATIO_GOAL if args.inline == "docs" else None,
        "goal_latency_met": postback_latency.goals_met(latency),
    }
    if spied is not None:
        out = ROOT / "bench" / "results" / "profile-pipeline.json"
        out.write_text(json.dumps(spied, indent=1) + "\n")
    write_result("pipeline" if args.inline == "docs" else "pipeline_lean", result)


if __name__ == "__main__":
    main()
