"""What the on-call engineer sees: /metrics, JSON logs without secrets, and status."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge.ops.embedded_redis import free_port
from bridge.ops.heartbeat import WORKERS
from bridge.redis_client import redis_time
from tests.conftest import API_KEY
from tests.fixtures import paypal_fixture
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import ROOT, WorkerProcess
from tests.signing import OTHER_SECRET, SECRET, stripe_body, stripe_headers
from tests.standins.refcampaign import Scripted

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.get_data(as_text=True))


def webhooks(provider: str, outcome: str, reason: str = "") -> tuple[str, Any]:
    labels = (("outcome", outcome), ("provider", provider), ("reason", reason))
    return ("refbridge_webhooks_total", labels)


def postbacks(outcome: str, reason: str = "") -> tuple[str, Any]:
    return ("refbridge_postbacks_total", (("outcome", outcome), ("reason", reason)))


def counted(client: Any, expected: dict[Any, float]) -> dict[Any, float]:
    """The current value of each metric of `expected` (0 for one not shown yet)."""
    got = scrape(client)
    return {key: got.get(key, 0) for key in expected}


def test_metrics_count_every_outcome(client, worker, refcampaign, paypal):
    refcampaign.script(Scripted(503))
    assert post(client, checkout_event("cs_test_m_retry")).status_code == 200
    refcampaign.wait_for(1)
    refcampaign.script(Scripted(422, body='{"error":["amount"]}'))
    assert post(client, checkout_event("cs_test_m_dead")).status_code == 200
    assert post(client, checkout_event("cs_test_m_retry")).status_code == 200  # resend
    ignored = checkout_event("cs_test_m_unpaid", payment_status="unpaid")
    assert post(client, ignored).status_code == 200
    body = stripe_body(checkout_event("cs_test_m_forged"))
    forged = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body, "whsec_x"))
    assert forged.status_code == 400
    forged_ipn = paypal_fixture("boxbilling__web_accept_completed.txt")
    assert client.post("/webhooks/paypal/ipn", data=forged_ipn, headers=FORM).status_code == 200
    wait(lambda: len(paypal.requests) == 1 and len(refcampaign.requests) == 3)

    latency = ("refbridge_delivery_latency_seconds_count", ())
    latency_inf = ("refbridge_delivery_latency_seconds_bucket", (("le", "+Inf"),))
    expected = {
        webhooks("stripe", "accepted"): 2,
        webhooks("stripe", "duplicate"): 1,
        webhooks("stripe", "ignored", "payment_pending"): 1,
        webhooks("stripe", "rejected", "bad_signature"): 1,
        webhooks("paypal", "rejected", "ipn_invalid"): 1,
        postbacks("delivered"): 1,
        postbacks("retried"): 1,
        postbacks("dead_lettered", "invalid_payload"): 1,
        ("refbridge_ipn_verifications_total", (("outcome", "invalid"),)): 1,
        latency: 1,
        latency_inf: 1,
    }

    def reached() -> bool:
        return all(value >= expected[key] for key, value in counted(client, expected).items())

    # The worker counts an outcome once it has RefCampaign's or PayPal's answer, a moment after
    # the stand-ins saw the requests: wait for every count to reach its value...
    wait(reached)
    # ...then for a later sale to be delivered and counted too: by then nothing the messages
    # above made is still on its way, and none of their counts may have gone past its value.
    assert post(client, checkout_event("cs_test_m_later")).status_code == 200
    expected |= {webhooks("stripe", "accepted"): 3, postbacks("delivered"): 2}
    expected |= {latency: 2, latency_inf: 2}
    wait(reached)

    got = scrape(client)
    assert {key: got.get(key, 0) for key in expected} == expected
    assert got[("refbridge_dead_letter", ())] == 1
    assert got[("refbridge_pending", ())] == 0
    assert got[("refbridge_oldest_undelivered_age_seconds", ())] == 0
    assert len(refcampaign.requests) == 4 and len(paypal.requests) == 1  # nothing tried again


def test_gauges_show_stuck_work(client, refcampaign, redis_url):
    # No worker runs: accepted conversions wait, and the gauges say so.
    for n in range(3):
        assert post(client, checkout_event(f"cs_test_stuck_{n}")).status_code == 200
    time.sleep(1.1)
    got = samples(client.get("/metrics").get_data(as_text=True))
    assert got[("refbridge_pending", ())] == 3
    assert got[("refbridge_queue_depth", ())] == 3
    assert got[("refbridge_oldest_undelivered_age_seconds", ())] >= 1.0


EMAILS = (
    "stripe@example.com",
    "Ada.Lovelace@Example.com",
    "fordnox@gmail.com",
    "mitcheydoe@gmail.com",
)


def last_attempts(output: str) -> list[dict[str, Any]]:
    """The attempts logged in `output` that ended their message: all but the retried ones."""
    whole_lines = output[: output.rfind("\n") + 1].splitlines()  # not one still being written
    attempts = [json.loads(line) for line in whole_lines if '"event":"attempt_finished"' in line]
    return [r for r in attempts if r["outcome"] != "retried"]


@pytest.fixture()
def web(env: dict[str, str], tmp_path: Path) -> Any:
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:bridge.web.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "bridge:create_app()",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
            time.sleep(0.1)
    yield base, tmp_path / "web.log"
    proc.terminate()
    proc.wait(15)
    log.close()


def test_logs_are_json_and_never_show_secrets_or_emails(web, env, tmp_path, refcampaign, paypal):
    base, web_log = web
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        refcampaign.script(Scripted(503), Scripted(401, body='{"error":"invalid API key"}'))
        for n, email in enumerate(EMAILS[:2]):
            event = checkout_event(
                f"cs_test_log_{n}", customer_details={"email": email}, metadata={"rcsid": "rcs_log"}
            )
            body = stripe_body(event)
            secret = SECRET if n == 0 else OTHER_SECRET
            assert requests.post(
                f"{base}/webhooks/stripe",
                data=body,
                headers=stripe_headers(body, secret),
                timeout=5,
            ).ok
        bad = stripe_body(checkout_event("cs_test_log_bad"))
        requests.post(
            f"{base}/webhooks/stripe",
            data=bad,
            headers=stripe_headers(bad, "whsec_wrong_secret_value"),
            timeout=5,
        )
        for name in (
            "boxbilling__web_accept_completed.txt",
            "boxbilling__subscr_payment_completed.txt",
        ):
            raw = paypal_fixture(name)
            if "web_accept" in name:
                paypal.send(raw)
            assert (
                requests.post(
                    f"{base}/webhooks/paypal/ipn", data=raw, headers=FORM, timeout=5
                ).status_code
                == 200
            )
        # Every message's last attempt logged (three postbacks, one of them after its 503, and
        # two IPN verifications): nothing more is coming, retries and their lines included.
        wait(lambda: len(last_attempts(worker.output())) >= 5, 30)
    finally:
        worker.stop()
    dlq = subprocess.run(
        [str(Path(sys.executable).parent / "refbridge"), "dlq", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    text = web_log.read_text() + worker.output() + dlq.stdout + dlq.stderr
    for secret in (API_KEY, SECRET, OTHER_SECRET, "whsec_wrong_secret_value"):
        assert secret not in text
    for email in (*EMAILS, "mitcheyDoe@gmail.com"):
        assert email.lower() not in text.lower()
    lines = [line for line in (web_log.read_text() + worker.output()).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    attempts = [r for r in records if r.get("event") == "attempt_finished"]
    assert attempts and all("attempt" in r and "provider_event_id" in r for r in attempts)
    assert len(last_attempts(worker.output())) == 5  # one per message, none ended twice
    assert any(r.get("externalId") == "cs_test_log_0" for r in attempts)
    received = [r for r in records if r.get("event") == "webhook_recorded"]
    assert any(r.get("provider_event_id") == "evt_cs_test_log_0" for r in received)


def workers_seen(client: Any) -> float:
    return samples(client.get("/metrics").get_data(as_text=True))[("refbridge_workers", ())]


def last_beat(r: redis.Redis, worker: WorkerProcess) -> float | None:
    """When `worker` last beat, by Redis's clock (its member is `<nodename> <pid>`)."""
    assert worker.proc is not None
    for member, score in r.zrange(WORKERS, 0, -1, withscores=True):
        if member.decode().endswith(f" {worker.proc.pid}"):
            return float(score)
    return None


@pytest.mark.timeout(240)
def test_workers_gauge_counts_live_workers(client, worker, env, tmp_path):
    r = redis.Redis.from_url(env["REDIS_URL"])
    # `worker` is running: its sweeper beats at once, then every 5 s.
    wait(lambda: workers_seen(client) == 1, 10)
    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        wait(lambda: workers_seen(client) == 2, 10)
        second_beat = last_beat(r, second)
        assert second_beat is not None
        worker.kill()  # SIGKILL: no goodbye; it counts until its last beat is 60 s old
        beat = last_beat(r, worker)
        assert beat is not None
        # Each reading between two readings of Redis's clock (the one the beats and the gauge
        # count by): however late it comes on a loaded machine, it tells which side of the
        # minute it was taken on. `second` counts throughout; the killed worker counts, then
        # no longer, each time on the right side of the minute.
        readings: list[tuple[float, float, float]] = []
        deadline = time.monotonic() + 90
        while not readings or readings[-1][1] != 1:
            assert time.monotonic() < deadline, f"still counted: {readings[-3:]}"
            time.sleep(0.25 if readings else 0)
            before = redis_time(r)
            seen = workers_seen(client)
            readings.append((before, seen, redis_time(r)))
        for before, seen, after in readings:
            if seen == 2:
                assert before <= beat + 60, f"counted {before - beat:.2f} s after its last beat"
            else:
                assert seen == 1 and after > beat + 60, f"gone {after - beat:.2f} s after it"
        assert readings[0][1] == 2
        # Nothing beat for it since it was killed (`second`'s beats may have pruned it by now).
        assert last_beat(r, worker) in (beat, None)
        assert (last_beat(r, second) or 0) > second_beat  # a live worker beats again and again
    finally:
        second.stop()  # a warm shutdown: it stops counting at once, not a minute later
    assert workers_seen(client) == 0
