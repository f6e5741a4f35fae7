"""`refbridge run` as a new user runs it: embedded Redis, web, worker; Ctrl-C stops them all."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from bridge.embedded_redis import free_port
from bridge.supervisor import WORKER_NICE
from tests.fixtures import stripe_fixture
from tests.signing import SECRET, stripe_body, stripe_headers

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "refbridge run exited early"
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("refbridge run never became ready")


def event(event_type: str, obj: dict[str, Any], n: int) -> dict[str, Any]:
    base = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    base.update(id=f"evt_run_{n}", type=event_type, created=1_760_000_000 + n)
    base["data"]["object"] = obj
    return base


def session(sid: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json")["data"]["object"])
    obj.update(id=sid, metadata={"rcsid": "rcs_run"}, **changes)
    return obj


def test_refbridge_run_end_to_end(tmp_path, refcampaign):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STRIPE_", "REFC"))}
    env.update(
        REFCAMPAIGN_API_KEY=refcampaign.api_key,
        REFCAMPAIGN_API_URL=refcampaign.url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PORT=str(port),
    )
    proc = subprocess.Popen(
        [REFBRIDGE, "run", "--concurrency", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "redis-server" for p in tree)
        # Acks before deliveries: the worker's processes run at a lower priority, the web's not.
        worker = [p for p in tree if "celery" in " ".join(p.cmdline())]
        web = [p for p in tree if "gunicorn" in " ".join(p.cmdline())]
        assert worker and web
        own_nice = psutil.Process().nice()
        assert {p.nice() for p in worker} == {min(19, own_nice + WORKER_NICE)}
        assert {p.nice() for p in web} == {own_nice}
        worker_session = Path(f"/proc/{worker[0].pid}/autogroup")
        web_session = Path(f"/proc/{web[0].pid}/autogroup")
        if worker_session.exists():  # Linux with autogroup: the niceness of each session
            assert worker_session.read_text().split()[-1] == str(WORKER_NICE)
            assert web_session.read_text().split()[-1] == "0"
        invoice = copy.deepcopy(stripe_fixture("srm__invoice.paid.json")["data"]["object"])
        invoice.update(
            id="in_run_renewal", billing_reason="subscription_cycle", metadata={"cid": "clk_run"}
        )
        events = [
            event("checkout.session.completed", session("cs_run_paid"), 1),
            event(
                "checkout.session.completed",
                session(
                    "cs_run_trial",
                    payment_status="no_payment_required",
                    mode="subscription",
                    amount_total=0,
                ),
                2,
            ),
            event(
                "checkout.session.completed", session("cs_run_later", payment_status="unpaid"), 3
            ),
            event("checkout.session.async_payment_succeeded", session("cs_run_later"), 4),
            event("invoice.paid", invoice, 5),
        ]
        for e in events:
            body = stripe_body(e)
            answer = requests.post(
                f"{base}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=5
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"received": True}
        forged = stripe_body(events[0])
        bad = requests.post(
            f"{base}/webhooks/stripe",
            data=forged,
            headers=stripe_headers(forged, secret="whsec_other"),
            timeout=5,
        )
        assert bad.status_code == 400
        delivered = {p["externalId"]: p for p in refcampaign.wait_for(4, timeout=30)}
        assert sorted(delivered) == [
            "cs_run_later",
            "cs_run_paid",
            "cs_run_trial",
            "in_run_renewal",
        ]
        assert delivered["cs_run_trial"]["conversionType"] == "TRIAL"
        assert delivered["cs_run_trial"]["amount"] == 0
        assert delivered["in_run_renewal"]["clickId"] == "clk_run"
        assert delivered["cs_run_paid"]["convertedAt"] == "2025-10-09T08:53:21Z"
        status = subprocess.run(
            [REFBRIDGE, "status", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert status.returncode == 0, status.stderr
        assert '"delivered": 4' in status.stdout
        assert (tmp_path / ".refbridge" / "appendonly.aof").exists() or any(
            (tmp_path / ".refbridge").glob("appendonly*")
        )
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert SECRET not in output and refcampaign.api_key not in output
    assert "Traceback" not in output
