"""Figure 2: drain rate of a 2,000-conversion backlog ÷ a single-connection requests.Session loop.

    .venv/bin/python -m bench.drain_rate

The backlog is made the real way: 2,000 signed webhooks posted to the web process while no
worker runs. Then the Procfile's worker starts; the rate counts from the first postback the
stand-in receives to the last (worker boot excluded, reported apart). The baseline posts the
same 2,000 payloads (the bytes the bridge would send) one after another over one
requests.Session to the same stand-in process, after a reset.
"""

from __future__ import annotations

import time

import requests

from bench.harness import API_KEY, Stack, write_result
from bench.loadgen import checkout_requests, closed_loop
from bridge.providers.stripe.mapping import map_stripe_event
from tests.fixtures import stripe_fixture

BACKLOG = 2000


def payloads(external_ids: list[str]) -> list[dict]:
    """The postback payloads the bridge makes of the bench's events, by externalId."""
    event = stripe_fixture("srm__checkout.session.completed.json")
    event["created"] = int(time.time())
    out = []
    for ext in external_ids:
        event["id"] = "evt_" + ext[3:]
        event["data"]["object"].update({"id": ext, "metadata": {"rcsid": "rcs_" + ext[3:]}})
        out.append(map_stripe_event(event, recurring=True).to_payload())  # type: ignore[union-attr]
    return out


def sequential_loop(url: str, bodies: list[dict]) -> float:
    """Seconds to POST every body, one at a time, over one keep-alive requests.Session."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = time.perf_counter()
    for body in bodies:
        response = session.post(url, json=body, headers=headers, timeout=10)
        response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    with Stack() as stack:
        _, port = stack.web()
        reqs = checkout_requests(BACKLOG, port, "drain")
        run = closed_loop(port, reqs, 16, warmup=0.0, duration=60.0)
        assert len(run.ok()) == BACKLOG, f"only {len(run.ok())} webhooks acknowledged"
        assert stack.standin.count()["requests"] == 0
        worker_started = time.time()
        # The web is idle during the drain, so the worker runs at the Procfile's priority: a
        # lowered one would only decide who gets the CPU between the worker and the local
        # stand-in, which in production runs at RefCampaign (BENCHMARKS.md: figure 2).
        stack.worker(shares_cpu=False)
        stack.standin.wait_accepted(BACKLOG, timeout=90)
        arrivals = sorted(at for _, at in stack.standin.arrivals())
        bridge_secs = arrivals[-1] - arrivals[0]
        boot_secs = arrivals[0] - worker_started
        stack.processes[-1].stop()
        stack.standin.reset()
        bodies = payloads([r.external_id for r in reqs])
        loop_secs = sequential_loop(stack.standin.postback_url, bodies)
        assert stack.standin.count()["accepted"] == BACKLOG
    bridge_rate = (BACKLOG - 1) / bridge_secs
    loop_rate = BACKLOG / loop_secs
    write_result(
        "drain_rate",
        {
            "backlog": BACKLOG,
            "worker": "celery -A celery_app --quiet worker --loglevel INFO --concurrency 4",
            "bridge_drain_per_s": round(bridge_rate, 1),
            "bridge_drain_seconds": round(bridge_secs, 3),
            "worker_start_to_first_postback_s": round(boot_secs, 3),
            "sequential_session_per_s": round(loop_rate, 1),
            "sequential_session_seconds": round(loop_secs, 3),
            "ratio": round(bridge_rate / loop_rate, 3),
            "goal_met": bridge_rate / loop_rate >= 1.0,
        },
    )


if __name__ == "__main__":
    main()
