"""PayPal catch-up end to end: the Procfile's web and worker, a real Redis, the PayPal API, IPN
and RefCampaign stand-ins, and `refbridge catchup paypal` run as the console script.

Some captures arrive as REST webhooks; the others never do (PayPal's history has them all).
Catch-up delivers exactly the missing ones, once; a capture whose IPN twin was delivered is a
duplicate; with CATCHUP_INTERVAL set the worker recovers them by itself. One web and one worker
serve the whole module; each test uses its own ids.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge.catchup.run import RUNS
from bridge.catchup.schedule import STARTED
from bridge.delivery.intake import PAYPAL_WEBHOOK, seen_key
from bridge.ops.embedded_redis import free_port
from tests.conftest import module_env
from tests.processes import WebProcess, WorkerProcess
from tests.standins.paypal import PayPalVerifier
from tests.standins.paypal_api import CLIENT_SECRET, PayPalApi, history_event
from tests.standins.refcampaign import RefCampaign
from tests.standins.stripe_api import StripeAPI
from tests.waiting import wait_until

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")
# Long enough that the worker's automatic catch-up runs once at start and then only when a
# test makes it due (by clearing when it last started, as the interval passing would).
INTERVAL = "3600"
STRIPE_KEY = "rk_test_catchup_paypal_5e1d"


@dataclasses.dataclass
class Stack:
    env: dict[str, str]
    web: WebProcess
    worker: WorkerProcess
    refcampaign: RefCampaign
    paypal: PayPalVerifier
    api: PayPalApi
    redis: redis.Redis

    def webhook(self, event: dict[str, Any]) -> None:
        """`event` as PayPal sends it to the webhook route, with its transmission headers."""
        raw = json.dumps(event).encode()
        headers = {**self.api.send(raw), "Content-Type": "application/json"}
        answer = requests.post(f"{self.web.url}/webhooks/paypal", data=raw, headers=headers)
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def stack(
    redis_server: Any,
    _refcampaign: RefCampaign,
    _paypal: PayPalVerifier,
    _paypal_api: PayPalApi,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    deployment = module_env(redis_server, _refcampaign, _paypal, _paypal_api)
    client = redis.Redis.from_url(redis_server.url)
    stripe_api = StripeAPI(STRIPE_KEY).start()
    env = {
        **deployment,
        "CATCHUP_INTERVAL": INTERVAL,
        "CATCHUP_WINDOW": "3600",
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_URL": stripe_api.url,
    }
    logs = tmp_path_factory.mktemp("catchup_paypal")
    worker = WorkerProcess(env, logs / "worker.log").start()
    web = WebProcess(env, logs / "web.log", free_port())
    try:
        web.start()
        # The worker's first automatic runs (Stripe's and PayPal's), over empty histories,
        # before any test's events.
        wait_until(lambda: client.llen(RUNS) >= 2, 30, "the first automatic run")
        yield Stack(env, web, worker, _refcampaign, _paypal, _paypal_api, client)
    finally:
        web.stop()
        worker.stop()
        stripe_api.stop()


@pytest.fixture()
def pp(stack: Stack) -> Stack:
    stack.refcampaign.reset()
    stack.paypal.reset()
    stack.api.reset(keep_tokens=True)
    return stack


def runs(client: redis.Redis) -> list[dict[str, Any]]:
    """Recent catch-up runs, newest first."""
    return [json.loads(r) for r in client.lrange(RUNS, 0, -1)]


def catchup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`refbridge catchup paypal ARGS…` as the console script, output captured."""
    return subprocess.run(
        [REFBRIDGE, "catchup", "paypal", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def delivered(refcampaign: RefCampaign) -> Counter[str]:
    """Accepted postbacks per externalId."""
    return Counter(p["externalId"] for p in refcampaign.postbacks())


def settle(refcampaign: RefCampaign, expected: set[str], timeout: float = 20.0) -> None:
    """Wait until every id in `expected` arrived, then a moment more for any duplicate."""
    wait_until(lambda: expected <= set(delivered(refcampaign)), timeout, f"{expected}")
    time.sleep(1.0)


def captures(n: int, prefix: str, now: float) -> list[dict[str, Any]]:
    return [
        history_event(
            resource_id=f"{prefix}{secrets.token_hex(5).upper()}",
            created=now - 600 + 30 * i,
            custom=f"rcs_{prefix.lower()}",
            value=f"{10 + i}.50",
        )
        for i in range(n)
    ]


def ids_of(events: list[dict[str, Any]]) -> set[str]:
    return {e["resource"]["id"] for e in events}


def test_catchup_delivers_exactly_the_missed_captures_once(pp: Stack) -> None:
    now = time.time()
    events = captures(7, "CU", now)
    arrived, missed = events[:3], events[3:]
    approved = history_event("approved", created=now - 300)  # maps to nothing: ignored
    pp.api.add_events([*events, approved])
    for event in arrived:
        pp.webhook(event)
    settle(pp.refcampaign, ids_of(arrived))

    first = summary_of(catchup(pp.env, "--since", "1h", "--json"))
    assert first["seen"] == 8 and first["ignored"] == 1 and first["unattributed"] == 0
    assert first["alreadyRecorded"] == 3 and first["newlyRecorded"] == 4
    assert first["ignoredByReason"] == {"unhandled_event_type": 1}
    settle(pp.refcampaign, ids_of(events))
    assert delivered(pp.refcampaign) == Counter({i: 1 for i in ids_of(events)})
    # The catch-up's postbacks carry the webhook path's metadata: the same conversion.
    by_id = {p["externalId"]: p for p in pp.refcampaign.postbacks()}
    for event in missed:
        metadata = by_id[event["resource"]["id"]]["metadata"]
        assert metadata["eventId"] == event["id"] and metadata["source"] == "paypal"
        # Recorded under the webhook path's seen key: its resend finds the event recorded.
        assert pp.redis.exists(seen_key(PAYPAL_WEBHOOK, event["id"]))

    second = summary_of(catchup(pp.env, "--since", "1h", "--json"))
    assert second["newlyRecorded"] == 0 and second["alreadyRecorded"] == 7
    time.sleep(1.0)
    assert delivered(pp.refcampaign) == Counter({i: 1 for i in ids_of(events)})

    # A webhook PayPal resends after catch-up recorded its event is a duplicate too.
    pp.webhook(missed[0])
    wait_until(lambda: pp.api.verdicts, 10, "the resend's verification")
    time.sleep(1.0)
    assert delivered(pp.refcampaign)[missed[0]["resource"]["id"]] == 1


def test_a_capture_whose_ipn_twin_was_delivered_is_a_duplicate(pp: Stack) -> None:
    capture = captures(1, "TW", time.time())[0]
    capture_id = capture["resource"]["id"]
    ipn = (
        b"txn_type=web_accept&payment_status=Completed&txn_id="
        + capture_id.encode()
        + b"&mc_gross=10.50&mc_currency=USD&custom=rcs_tw&charset=UTF-8"
        b"&payment_date=02%3A18%3A45+Dec+03%2C+2026+PST&ipn_track_id="
        + secrets.token_hex(6).encode()
    )
    pp.paypal.send(ipn)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = requests.post(f"{pp.web.url}/webhooks/paypal/ipn", data=ipn, headers=form)
    assert answer.status_code == 200
    settle(pp.refcampaign, {capture_id})
    pp.api.add_events([capture])

    result = summary_of(catchup(pp.env, "--since", "1h", "--json"))
    assert result["newlyRecorded"] == 0 and result["alreadyRecorded"] >= 1
    time.sleep(1.0)
    assert delivered(pp.refcampaign) == Counter({capture_id: 1})


def test_dry_run_records_nothing_and_the_text_summary(pp: Stack) -> None:
    events = captures(2, "DR", time.time())
    pp.api.add_events(events)
    dry = catchup(pp.env, "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would be recorded 2" in dry.stdout, dry.stdout
    time.sleep(1.0)
    assert not ids_of(events) & set(delivered(pp.refcampaign))
    # The window's bounds are PayPal's: nothing from before --since.
    later = summary_of(catchup(pp.env, "--since", "1s", "--json"))
    assert later["seen"] == 0


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"PAYPAL_CLIENT_SECRET": ""}, "PAYPAL_CLIENT_SECRET"),
        ({"PAYPAL_CLIENT_ID": ""}, "PAYPAL_CLIENT_ID"),
        ({"PAYPAL_CLIENT_SECRET": "EL1-not-the-secret-" + "x" * 20}, "PAYPAL_CLIENT_SECRET"),
    ],
    ids=["no_secret", "no_client_id", "refused"],
)
def test_missing_or_refused_credentials_fail_with_one_line(
    pp: Stack, change: dict[str, str], names: str
) -> None:
    result = catchup({**pp.env, **change}, "--since", "1h", "--json")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    for secret in (CLIENT_SECRET, *change.values()):
        assert not secret or secret not in result.stderr


def test_the_worker_catches_up_on_paypal_by_itself(pp: Stack) -> None:
    events = captures(3, "AU", time.time())
    pp.api.add_events(events)
    offset = len(pp.worker.output())
    # As when CATCHUP_INTERVAL has passed since the last run started.
    pp.redis.delete(*(STARTED.format(provider=p) for p in ("stripe", PAYPAL_WEBHOOK)))
    settle(pp.refcampaign, ids_of(events))
    assert delivered(pp.refcampaign) == Counter({i: 1 for i in ids_of(events)})
    lines = [json.loads(x) for x in pp.worker.output(offset).splitlines() if x.startswith("{")]
    recovered = [x for x in lines if x.get("event") == "catchup_recovered"]
    assert recovered and recovered[0]["level"] == "warning"
    assert recovered[0]["provider"] == PAYPAL_WEBHOOK and recovered[0]["recovered"] == 3
    status = subprocess.run(
        [REFBRIDGE, "status", "--json"], env=pp.env, capture_output=True, text=True, timeout=30
    )
    last = json.loads(status.stdout)["catchup"][PAYPAL_WEBHOOK]
    assert last["trigger"] == "auto" and last["recovered"] == 3
    # Within the same run, under the same lock: Stripe, configured too, was caught up as well.
    assert {r["provider"] for r in runs(pp.redis)[:2]} == {"stripe", PAYPAL_WEBHOOK}
    assert json.loads(status.stdout)["catchup"]["stripe"]["trigger"] == "auto"
