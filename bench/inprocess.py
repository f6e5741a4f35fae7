"""Attribution, not a figure: CPU per webhook of the app itself, without gunicorn or sockets.

    .venv/bin/python -m bench.inprocess [--repeat 3] [--rounds 4] [--events 2500]

Calls the bare app's and the bridge's WSGI callables in a loop with pre-built environs
(distinct signed checkout.session.completed events) against a fresh embedded Redis, and prints
CPU microseconds per request (minimum and median over rounds). Then the bridge again with one
part at a time replaced by a no-op, to attribute its cost: the log line, the signature check
(json.loads only), the mapping (a fixed conversion) and the intake script's Redis call.
Each variant runs in its own process, so no variant leaves state for the next; the variants
take turns `--repeat` times, so that a drift of the machine's speed falls on all of them.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import PY, ROOT
from bench.loadgen import checkout_requests
from tests.signing import SECRET

VARIANTS = [
    "bare",
    "bridge",
    "bridge without log line",
    "bridge without signature check",
    "bridge without mapping",
    "bridge without Redis call",
]


def environs(count: int, tag: str) -> list[tuple[dict[str, Any], bytes]]:
    out = []
    for request in checkout_requests(count, 8000, tag):
        head, body = request.raw.split(b"\r\n\r\n", 1)
        env: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/webhooks/stripe",
            "QUERY_STRING": "",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        for line in head.decode().split("\r\n")[1:]:
            name, value = line.split(": ", 1)
            key = name.upper().replace("-", "_")
            env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
        out.append((env, body))
    return out


def patched_bridge(variant: str) -> Any:
    import bridge.web.stripe as webhooks
    from bridge.conversion import Conversion
    from bridge.web.app import create_app

    if "log line" in variant:

        class Silent:
            def info(self, *_: Any, **__: Any) -> None: ...

            warning = info

        webhooks.log = Silent()  # type: ignore[assignment]
    if "signature" in variant:
        webhooks.verify_stripe_event = lambda raw, *_, **__: json.loads(raw)  # type: ignore[assignment]
    if "mapping" in variant:
        ids = itertools.count()
        webhooks.map_stripe_event = lambda *_, **__: Conversion(  # type: ignore[assignment]
            f"cs_fixed_{next(ids)}", "SALE", 100, "USD", session_id="rcs_fixed"
        )
    app = create_app()
    if "Redis" in variant:
        ledger = app.extensions["refbridge"]["ledger"]
        ledger._enqueue = lambda keys, args: 1  # noqa: SLF001
    return app


def run_variant(variant: str, rounds: int, events: int) -> None:
    """In a child process: print one JSON line with the variant's CPU µs per request."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — the app's log lines
    if variant == "bare":
        from bench.bare_app import app
    else:
        app = patched_bridge(variant)

    def start_response(status: str, *_: Any) -> None:
        assert status.startswith("200"), status

    per_request = []
    for r in range(rounds):
        batch = environs(events, f"{r}")
        started = time.process_time()
        for env, body in batch:
            environ = dict(env, **{"wsgi.input": io.BytesIO(body)})
            answer = app(environ, start_response)
            b"".join(answer)
            answer.close()
        per_request.append((time.process_time() - started) / events * 1e6)
    result = {
        "variant": variant,
        "min_us": round(min(per_request)),
        "median_us": round(statistics.median(per_request)),
    }
    print(json.dumps(result), file=sys.__stdout__, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--events", type=int, default=2500)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args.variant, args.rounds, args.events)
        return
    from bridge.ops.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory() as tmp:
        redis_server = EmbeddedRedis(Path(tmp)).start()
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "REFCAMPAIGN_API_KEY": "rc_bench_key_0001",
            "PYTHONPATH": str(ROOT),
        }
        results: dict[str, list[dict[str, int]]] = {v: [] for v in VARIANTS}
        try:
            for _ in range(args.repeat):
                for variant in VARIANTS:
                    command = [
                        PY,
                        "-m",
                        "bench.inprocess",
                        "--variant",
                        variant,
                        "--rounds",
                        str(args.rounds),
                        "--events",
                        str(args.events),
                    ]
                    done = subprocess.run(
                        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
                    )
                    if done.returncode != 0:
                        raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
                    results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            redis_server.stop()
    bridge = min(r["min_us"] for r in results["bridge"])
    for variant, runs in results.items():
        best = min(r["min_us"] for r in runs)
        median = statistics.median(r["median_us"] for r in runs)
        share = "" if variant in ("bare", "bridge") else f"  (part: {bridge - best:4d} µs)"
        print(f"{variant:32s} {best:5d} µs min  {median:5.0f} µs median per request{share}")


if __name__ == "__main__":
    main()
