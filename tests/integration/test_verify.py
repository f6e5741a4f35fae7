"""`refbridge verify` proves a window of deliveries against the RefCampaign stand-in: the web
app and a real Celery worker deliver; the stand-in then loses some rows; verify restores exactly
those, confirms the rest, and a second run restores nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from bridge.delivery.ledger import Ledger
from tests.integration.test_stripe_flow import checkout_event, post
from tests.standins.refcampaign import RefCampaign
from tests.waiting import wait_until

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")


def verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cli_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [REFBRIDGE, "verify", *args], env=cli_env, capture_output=True, text=True, timeout=60
    )


def test_verify_restores_exactly_the_lost_rows_and_confirms_the_rest(
    client: Any, worker: Any, refcampaign: RefCampaign, env: dict[str, str]
) -> None:
    sessions = [f"cs_test_verify_{n}" for n in range(5)]
    for session in sessions:
        assert post(client, checkout_event(session)).status_code == 200
    refcampaign.wait_for(5)
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"]))
    wait_until(
        lambda: all((ledger.get(s) or {}).get("status") == "delivered" for s in sessions),
        what="all five recorded as delivered",
    )
    recorded = {s: (ledger.get(s) or {})["conversion_id"] for s in sessions}
    with refcampaign.lock:  # RefCampaign loses two rows
        for lost in sessions[1:3]:
            del refcampaign.conversions[lost]
    first = verify(env, "--since", "1h", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["checked"], summary["confirmed"], summary["restored"]) == (5, 3, 2)
    assert sorted(summary["restoredIds"]) == sessions[1:3]
    assert summary["failed"] == 0
    warnings = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    assert (
        sorted(w["externalId"] for w in warnings if w["event"] == "conversion_restored")
        == (sessions[1:3])
    )
    for session in sessions:  # the rows RefCampaign has now, recorded
        assert (ledger.get(session) or {})["conversion_id"] == (
            refcampaign.conversions[session]["id"]
        )
    assert recorded[sessions[0]] == refcampaign.conversions[sessions[0]]["id"]
    again = json.loads(verify(env, "--since", "1h", "--json").stdout)
    assert (again["checked"], again["confirmed"], again["restored"]) == (5, 5, 0)
    human = verify(env, "--since", "1h")
    assert human.stdout.splitlines()[:3] == ["verify", "  checked    5", "  confirmed  5"]


def test_verify_says_which_failed_and_exits_1(
    client: Any, worker: Any, refcampaign: RefCampaign, env: dict[str, str]
) -> None:
    from tests.standins.refcampaign import Scripted

    assert post(client, checkout_event("cs_test_verify_fail")).status_code == 200
    refcampaign.wait_for(1)
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"]))
    wait_until(lambda: (ledger.get("cs_test_verify_fail") or {}).get("status") == "delivered")
    refcampaign.script(Scripted(503))
    result = verify(env, "--since", "1h", "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["failures"] == [
        {"externalId": "cs_test_verify_fail", "status": 503, "error": "refused"}
    ]
    assert verify(env, "--since", "tomorrow").returncode == 1
