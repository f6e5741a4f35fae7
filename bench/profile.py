"""Profile the web and worker processes under figure 1's load with py-spy.

    .venv/bin/pip install py-spy          # not a project dependency; benches only
    .venv/bin/python -m bench.profile [--seconds 8] [--no-worker]

Records every gunicorn worker and Celery pool process (py-spy, collapsed stacks, --nonblocking
sampling at 200 Hz) while 16 clients post distinct signed events, then prints the functions with
the most inclusive samples per role. Raw stacks are kept under bench/results/profile-*.txt.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from bench.harness import ROOT, Stack
from bench.loadgen import checkout_requests, closed_loop


def top_functions(collapsed: Path, limit: int) -> tuple[int, list[tuple[str, int]]]:
    """Total samples and the `limit` frames present in the most samples (inclusive)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    return total, inclusive.most_common(limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--gunicorn-args", default="")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    with Stack() as stack:
        web, port = stack.web(extra=args.gunicorn_args.split())
        targets = [("web", p.pid) for p in web.tree()[1:]]
        if not args.no_worker:
            worker = stack.worker()
            targets += [("worker-main", worker.tree()[0].pid)]
            targets += [("worker-child", p.pid) for p in worker.tree()[1:]]
        reqs = checkout_requests(20_000, port, "prof")
        load = threading.Thread(
            target=closed_loop, args=(port, reqs, 16, 1.0, args.seconds + 2), daemon=True
        )
        load.start()
        spies = []
        for role, pid in targets:
            path = out_dir / f"profile-{role}-{pid}.txt"
            cmd = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(args.seconds),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(path),
            ]
            spies.append(
                (
                    role,
                    path,
                    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                )
            )
        for _, _, proc in spies:
            proc.wait(args.seconds + 30)
        load.join(args.seconds + 30)
    for role, path, _ in spies:
        if not path.exists():
            print(f"== {role}: no profile (py-spy needs ptrace permission)")
            continue
        total, top = top_functions(path, args.top)
        print(f"== {role} {path.name}: {total} samples")
        for frame, n in top:
            print(f"{100 * n / max(total, 1):5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
