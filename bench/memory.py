"""Figure 5: peak RSS of the web and worker process trees over 10,000 conversions.

    .venv/bin/python -m bench.memory

16 closed-loop clients post distinct signed events to the web process (Procfile settings) with
the Procfile worker delivering them. RSS (psutil) of gunicorn master + workers and Celery main +
pool children is sampled after 1,000 (warm), 5,000 and 10,000 conversions were delivered, and
every 0.5 s in between for the peak. Goal: no growth between 5,000 and 10,000, read as the
sum of RSS growing by less than 1 % (allocator noise).
"""

from __future__ import annotations

import threading

from bench.harness import Stack, write_result
from bench.loadgen import checkout_requests, closed_loop

MIB = 1024 * 1024
MARKS = (1000, 5000, 10_000)


def main() -> None:
    samples: dict[int, dict[str, dict[str, int]]] = {}
    peak = {"web": 0, "worker": 0}
    with Stack() as stack:
        web, port = stack.web()
        worker = stack.worker()
        stop = threading.Event()

        def watch() -> None:
            for _ in range(2400):  # ≤ 20 minutes at 0.5 s; stopped long before
                for name, proc in (("web", web), ("worker", worker)):
                    peak[name] = max(peak[name], sum(proc.rss().values()))
                if stop.wait(0.5):
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        reqs = checkout_requests(MARKS[-1], port, "mem")
        done = 0
        for mark in MARKS:
            run = closed_loop(port, reqs[done:mark], 16, warmup=0.0, duration=120.0)
            assert len(run.ok()) == mark - done, "a webhook was not acknowledged"
            done = mark
            stack.standin.wait_accepted(mark, timeout=120)
            samples[mark] = {"web": web.rss(), "worker": worker.rss()}
        stop.set()
        watcher.join(5)
    total = {m: sum(sum(v.values()) for v in s.values()) for m, s in samples.items()}
    growth = total[10_000] - total[5000]
    write_result(
        "memory",
        {
            "rss_mib": {
                str(m): {
                    role: {k: round(v / MIB, 1) for k, v in procs.items()}
                    for role, procs in s.items()
                }
                for m, s in samples.items()
            },
            "total_rss_mib": {str(m): round(t / MIB, 1) for m, t in total.items()},
            "peak_rss_mib": {k: round(v / MIB, 1) for k, v in peak.items()},
            "growth_5000_to_10000_mib": round(growth / MIB, 2),
            "growth_percent": round(100 * growth / total[5000], 2),
            "goal_met": growth < 0.01 * total[5000],
        },
    )


if __name__ == "__main__":
    main()
