"""Catch-up over 10,000 events: events per second and Redis round trips per event.

    .venv/bin/python -m bench.catchup

The Stripe API stand-in of the tests (`tests/standins/stripe_api.py`) serves 10,000 distinct
paid checkout sessions (the real sample, each with its own ids) from its own process; a fresh
embedded Redis (AOF on) holds the ledger. Catch-up runs as `refbridge catchup stripe` runs it
(`run_catchup` over the SDK source, throttled to 20 requests/s), twice: the first run records
every event, the second finds each already recorded; a third repeats the second without the
throttle, to show what the code itself takes. Round trips are counted on the client's
connections (each command or pipeline sent is one), commands by Redis's INFO commandstats.
No worker runs: delivering is figure 2's subject.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.harness import PY, ROOT, write_result
from bridge.catchup.run import run_catchup
from bridge.catchup.stripe_events import MAX_RATE, StripeEvents
from bridge.catchup.throttle import Throttle
from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis
from config import Settings

EVENTS = 10_000
KEY = "rk_bench_catchup_0001"


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one command, or one whole pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def serve(count: int) -> None:
    """The stand-in's process: serve `count` events, print the URL, run until killed."""
    from tests.standins.stripe_api import StripeAPI, sample_events

    server = StripeAPI(KEY)
    server.add(sample_events(count, start=int(time.time()) - count - 60, prefix="bench"))
    print(server.url, flush=True)
    server.serve_forever()


def commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def one_run(
    settings: Settings, client: redis.Redis, label: str, throttled: bool = True
) -> dict[str, Any]:
    ledger = Ledger(client)
    source = StripeEvents(settings, throttle=None if throttled else Throttle(1e9))
    CountingConnection.sent = 0
    before = commands(client)
    started = time.perf_counter()
    until = int(time.time())
    summary = run_catchup(source, ledger, until - 3 * 86400, until, trigger="bench")
    seconds = time.perf_counter() - started
    trips = CountingConnection.sent
    used = commands(client) - before - 1  # less the INFO that read `before`
    return {
        "run": label,
        "events": summary.seen,
        "newly_recorded": summary.recorded,
        "already_recorded": summary.duplicate,
        "requests": summary.requests,
        "seconds": round(seconds, 3),
        "events_per_second": round(summary.seen / seconds, 1),
        "redis_round_trips": trips,
        "redis_round_trips_per_event": round(trips / summary.seen, 4),
        "redis_commands_per_event": round(used / summary.seen, 3),
    }


def main() -> None:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        stand_in = subprocess.Popen(
            [PY, "-m", "bench.catchup", "--serve", str(EVENTS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            url = (stand_in.stdout.readline() if stand_in.stdout else "").strip()
            settings = Settings.from_env({"STRIPE_API_KEY": KEY, "STRIPE_API_URL": url})
            pool = redis.ConnectionPool.from_url(server.url, connection_class=CountingConnection)
            client = redis.Redis(connection_pool=pool)
            runs = [
                one_run(settings, client, "first"),
                one_run(settings, client, "again"),
                # Without the rate limit: what the code itself can take, for reading the above.
                one_run(settings, client, "again, unthrottled", throttled=False),
            ]
        finally:
            stand_in.kill()
            stand_in.wait()
            server.stop()
    write_result(
        "catchup",
        {"events": EVENTS, "rate_limit_requests_per_second": MAX_RATE, "runs": runs},
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
