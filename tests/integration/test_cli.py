"""The dead-letter story told through the `refbridge` CLI, run as a subprocess.

A real redis-server, a real Celery worker and the RefCampaign stand-in; webhooks go through the
real web app (the `client` fixture), and every look at the state goes through `refbridge`.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.conversion import Conversion
from bridge.delivery.keys import DLQ, DUE
from bridge.delivery.ledger import Ledger
from bridge.delivery.publish import publisher
from bridge.providers.stripe.mapping import map_stripe_event
from config import Settings
from tests.fixtures import stripe_fixture
from tests.processes import WorkerProcess
from tests.settled import recorded
from tests.signing import stripe_body, stripe_headers
from tests.standins.refcampaign import RefCampaign, Scripted
from tests.waiting import wait_until

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")
UNPROCESSABLE = '{"error":["amount must be an integer in minor units"]}'
UNAUTHORIZED = '{"error":"invalid API key"}'


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture()
def cli(env: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`refbridge ARGS…` with the test deployment's environment, from a directory of its own."""
    cwd = tmp_path / "cli"
    cwd.mkdir()
    cli_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REFBRIDGE, *args], env=cli_env, cwd=cwd, capture_output=True, text=True, timeout=30
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def dlq_list(cli: Callable[..., Any]) -> list[dict[str, Any]]:
    entries = json.loads(ok(cli("dlq", "list", "--json")))
    assert isinstance(entries, list)
    return entries


def status(cli: Callable[..., Any]) -> dict[str, Any]:
    data = json.loads(ok(cli("status", "--json")))
    assert isinstance(data, dict)
    return data


def wait_dead_lettered(redis_url: str, count: int, timeout: float = 15.0) -> list[str]:
    ledger = Ledger(redis.Redis.from_url(redis_url))
    return wait_until(
        lambda: len(ids := ledger.dead_letter_ids()) >= count and ids,
        timeout,
        f"{count} dead-letter entries",
    )


def finished(redis_url: str, outcomes: dict[str, str]) -> dict[str, dict[str, str]]:
    """Wait until each item in `outcomes` has the status given there (`dead`, `delivered`): an
    outcome the ledger recorded after the item's last request, that leaves it out of `rb:due`,
    so nothing attempts it again. Every field of each (`attempts` counts every claim made)."""
    return recorded(redis.Redis.from_url(redis_url), outcomes)


def nothing_due(redis_url: str) -> bool:
    """Whether the ledger has no work left: no item pending, scheduled or being attempted."""
    return redis.Redis.from_url(redis_url).zcard(DUE) == 0


def checkout_event(session_id: str) -> dict[str, Any]:
    event = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    event["id"] = "evt_" + session_id
    event["created"] = int(time.time())
    event["data"]["object"].update({"id": session_id, "metadata": {"rcsid": "rcs_" + session_id}})
    return event


def post_checkout(client: Any, session_id: str) -> None:
    body = stripe_body(checkout_event(session_id))
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert response.status_code == 200
    assert response.get_json() == {"received": True}


def postbacks_for(refcampaign: RefCampaign, external_id: str) -> list[dict[str, Any]]:
    return [p for p in refcampaign.postbacks() if p.get("externalId") == external_id]


# --- 422: dead-lettered at once, then looked at ----------------------------------------------


def test_422_is_dead_lettered_at_once_and_shown_by_the_cli(
    client, worker, refcampaign, redis_url, cli
):
    refcampaign.script(Scripted(422, body=UNPROCESSABLE))
    post_checkout(client, "cs_cli_422")
    assert wait_dead_lettered(redis_url, 1) == ["cs_cli_422"]
    # Dead after its one attempt, not due: terminal, no retry.
    assert finished(redis_url, {"cs_cli_422": "dead"})["cs_cli_422"]["attempts"] == "1"
    assert len(refcampaign.requests) == 1

    sent = json.loads(refcampaign.requests[0]["body"])
    [entry] = dlq_list(cli)
    assert entry["id"] == "cs_cli_422"
    assert entry["externalId"] == "cs_cli_422"
    assert entry["reason"] == "invalid_payload"
    assert entry["status"] == 422
    assert entry["attempts"] == 1
    assert entry["payload"] == sent
    assert entry["payload"]["sessionId"] == "rcs_cs_cli_422"

    shown = json.loads(ok(cli("dlq", "show", "cs_cli_422")))
    assert shown == entry
    assert shown["response"] == UNPROCESSABLE
    assert shown["provider"] == "stripe"
    assert shown["providerEventId"] == "evt_cs_cli_422"
    assert shown["replays"] == 0
    for stamp in ("firstAttemptAt", "lastAttemptAt", "deadLetteredAt"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown[stamp]), stamp

    table = ok(cli("dlq", "list")).splitlines()
    assert table[0].split() == ["ID", "REASON", "STATUS", "ATTEMPTS", "LAST", "ATTEMPT"]
    assert table[1].split()[:4] == ["cs_cli_422", "invalid_payload", "422", "1"]
    assert len(table) == 2

    counts = status(cli)
    assert counts["dead_letter"] == 1
    assert counts["dead_lettered"] == 1
    assert counts["delivered"] == 0
    assert counts["accepted"] == 1
    assert counts["pending"] == 0
    assert counts["queue_depth"] == 0
    assert counts["last_error"] == "422 invalid_payload"

    human = ok(cli("status")).splitlines()
    sections = [line for line in human if not line.startswith(" ")]
    assert sections == ["Work", "Counts", "PayPal REST webhooks", "Latest", "Refunds"]
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in human if line.startswith(" ")
    )
    assert rows["dead letter"] == "1"
    assert rows["delivered"] == "0"
    assert rows["last delivered at"] == "-"
    assert "{" not in "\n".join(human)  # a table, not JSON


def test_replay_twice_by_id_posts_once(client, worker, refcampaign, redis_url, cli):
    refcampaign.script(Scripted(422, body=UNPROCESSABLE))
    post_checkout(client, "cs_cli_twice")
    wait_dead_lettered(redis_url, 1)

    assert ok(cli("dlq", "replay", "cs_cli_twice")) == "replayed 1 entry\n"
    again = cli("dlq", "replay", "cs_cli_twice")
    # Documented by the code: not an error (exit 0), a note on stderr, nothing re-queued.
    assert again.returncode == 0
    assert again.stdout == "replayed 0 entries\n"
    assert re.fullmatch(
        r"refbridge: cs_cli_twice is not dead-lettered \(status (pending|delivered)\);"
        r" left as is\n",
        again.stderr,
    )

    before = finished(redis_url, {"cs_cli_twice": "delivered"})["cs_cli_twice"]
    assert before["attempts"] == "2"  # the 422, then one success: the second replay added none
    third = cli("dlq", "replay", "cs_cli_twice")
    assert third.returncode == 0
    assert third.stderr == (
        "refbridge: cs_cli_twice is not dead-lettered (status delivered); left as is\n"
    )
    # Left as it was, not due: nothing attempts it again.
    assert finished(redis_url, {"cs_cli_twice": "delivered"})["cs_cli_twice"] == before
    assert len(postbacks_for(refcampaign, "cs_cli_twice")) == 2
    assert len(refcampaign.accepted) == 1
    assert dlq_list(cli) == []
    assert status(cli)["delivered"] == 1


# --- a wrong API key: everything dead-lettered, fixed, replayed ------------------------------


def test_wrong_api_key_then_replay_all_delivers_each_once(
    client, worker, refcampaign, redis_url, cli
):
    refcampaign.default = Scripted(401, body=UNAUTHORIZED)
    ids = ["cs_cli_key_1", "cs_cli_key_2", "cs_cli_key_3"]
    for session_id in ids:
        post_checkout(client, session_id)
    assert sorted(wait_dead_lettered(redis_url, 3)) == ids
    dead = finished(redis_url, dict.fromkeys(ids, "dead"))
    assert {item["attempts"] for item in dead.values()} == {"1"}  # terminal: no retry
    assert len(refcampaign.requests) == 3

    entries = dlq_list(cli)
    assert sorted(e["id"] for e in entries) == ids
    assert {e["reason"] for e in entries} == {"unauthorized"}
    assert {e["status"] for e in entries} == {401}
    assert {e["attempts"] for e in entries} == {1}
    assert status(cli)["dead_letter"] == 3

    refcampaign.reset()  # the key is fixed
    assert ok(cli("dlq", "replay", "--all")) == "replayed 3 entries\n"
    accepted = refcampaign.wait_for(3)
    assert sorted(p["externalId"] for p in accepted) == ids
    # Each delivered by the one attempt since its replay, and no work left.
    delivered = finished(redis_url, dict.fromkeys(ids, "delivered"))
    assert {item["attempts"] for item in delivered.values()} == {"2"}
    assert nothing_due(redis_url)
    assert sorted(p["externalId"] for p in refcampaign.postbacks()) == ids  # once each

    assert dlq_list(cli) == []
    assert ok(cli("dlq", "list")) == "dead-letter queue is empty\n"
    counts = status(cli)
    assert counts["dead_letter"] == 0
    assert counts["delivered"] == 3
    assert counts["pending"] == 0
    assert counts["last_delivered_at"] is not None
    assert ok(cli("dlq", "replay", "--all")) == "replayed 0 entries\n"


# --- purge ---------------------------------------------------------------------------------


def test_purge_by_id_and_all(client, worker, refcampaign, redis_url, cli):
    refcampaign.default = Scripted(422, body=UNPROCESSABLE)
    for session_id in ("cs_cli_purge_1", "cs_cli_purge_2", "cs_cli_purge_3"):
        post_checkout(client, session_id)
    wait_dead_lettered(redis_url, 3)
    refcampaign.reset()

    assert ok(cli("dlq", "purge", "cs_cli_purge_2")) == "purged 1 entry\n"
    assert sorted(e["id"] for e in dlq_list(cli)) == ["cs_cli_purge_1", "cs_cli_purge_3"]
    assert redis.Redis.from_url(redis_url).exists("rb:item:cs_cli_purge_2") == 0
    gone = cli("dlq", "show", "cs_cli_purge_2")
    assert one_error_line(gone) == "refbridge: no dead-letter entry 'cs_cli_purge_2'"
    again = cli("dlq", "purge", "cs_cli_purge_2")
    assert one_error_line(again) == "refbridge: no such entry: cs_cli_purge_2"

    assert ok(cli("dlq", "purge", "--all")) == "purged 2 entries\n"
    assert dlq_list(cli) == []
    assert status(cli)["dead_letter"] == 0
    # Gone from the ledger, with nothing due: a worker sends only what the ledger holds.
    r = redis.Redis.from_url(redis_url)
    assert not list(r.scan_iter("rb:item:cs_cli_purge_*"))
    assert nothing_due(redis_url)
    assert refcampaign.requests == []  # purged entries are never sent


# --- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["replay", "purge"])
def test_replay_or_purge_needs_ids_or_all(redis_url, cli, action):
    neither = cli("dlq", action)
    assert one_error_line(neither) == f"refbridge: dlq {action}: give entry ids or --all (not both)"
    assert neither.stdout == ""
    both = cli("dlq", action, "some_id", "--all")
    assert one_error_line(both) == f"refbridge: dlq {action}: give entry ids or --all (not both)"


@pytest.mark.parametrize("action", ["replay", "purge"])
def test_unknown_id_fails_with_one_line(redis_url, cli, action):
    result = cli("dlq", action, "cs_does_not_exist")
    assert one_error_line(result) == "refbridge: no such entry: cs_does_not_exist"


def test_show_unknown_id_fails_with_one_line(redis_url, cli):
    result = cli("dlq", "show", "cs_does_not_exist")
    assert one_error_line(result) == "refbridge: no dead-letter entry 'cs_does_not_exist'"
    assert result.stdout == ""


def test_empty_deployment_status(redis_url, cli):
    counts = status(cli)
    assert counts["dead_letter"] == 0
    assert counts["queue_depth"] == 0
    assert counts["delivered"] == 0
    assert counts["oldest_undelivered_age_seconds"] is None
    assert dlq_list(cli) == []


# --- exhausted: retried until DELIVERY_MAX_AGE, replay restarts the window --------------------


@pytest.fixture()
def short_lived_worker(env: dict[str, str], tmp_path: Path):
    short = {
        **env,
        "DELIVERY_MAX_AGE": "2",
        "DELIVERY_BACKOFF_BASE": "0.1",
        "DELIVERY_BACKOFF_MAX": "0.5",
    }
    proc = WorkerProcess(short, tmp_path / "short-worker.log").start()
    yield proc
    proc.stop()


def test_still_failing_conversion_is_exhausted_and_replay_restarts_the_window(
    client, short_lived_worker, refcampaign, redis_url, cli
):
    refcampaign.default = Scripted(503)
    post_checkout(client, "cs_cli_exhausted")
    wait_dead_lettered(redis_url, 1, timeout=15)
    tries = len(refcampaign.requests)

    [entry] = dlq_list(cli)
    assert entry["id"] == "cs_cli_exhausted"
    assert entry["reason"] == "exhausted"
    assert entry["status"] == 503
    assert entry["attempts"] > 1
    assert entry["attempts"] == tries
    # Dead after its last request (the stand-in had it before the outcome was recorded), not
    # due: dead means no more attempts.
    [item] = finished(redis_url, {"cs_cli_exhausted": "dead"}).values()
    assert item["attempts"] == str(tries)
    assert len(refcampaign.requests) == tries

    # Fixed, except for one more 503: had the replay not restarted the 2 s window (which ran
    # out before it), that 503 would dead-letter the entry again at once.
    refcampaign.default = None
    refcampaign.script(Scripted(503))
    assert ok(cli("dlq", "replay", "cs_cli_exhausted")) == "replayed 1 entry\n"
    [delivered] = refcampaign.wait_for(1, timeout=15)
    assert delivered["externalId"] == "cs_cli_exhausted"
    assert len(refcampaign.requests) == tries + 2

    assert dlq_list(cli) == []
    item = Ledger(redis.Redis.from_url(redis_url)).get("cs_cli_exhausted")
    assert item is not None
    assert item["status"] == "delivered"
    assert item["replays"] == "1"
    assert int(item["attempts"]) == tries + 2
    assert redis.Redis.from_url(redis_url).zscore(DLQ, "rb:item:cs_cli_exhausted") is None


def test_items_whose_every_attempt_crashes_back_off_and_are_dead_lettered(
    client, short_lived_worker, refcampaign, redis_url, cli
):
    # Ledger items no attempt can handle, as corrupt or foreign items would be, recorded by the
    # intake's own script: a payload that is not JSON; the same with an unreadable window too;
    # an IPN whose stored bytes are not base64. And one with an unreadable attempt count,
    # which must not stop the claim of its batch.
    ledger = Ledger(
        redis.Redis.from_url(redis_url), publish=publisher(Settings(redis_url=redis_url)).deliver
    )
    broken = '{"externalId": "cs_cli_corrupt", '
    sound = map_stripe_event(checkout_event("cs_cli_bad_count"), recurring=False)
    assert isinstance(sound, Conversion)
    items = {
        "cs_cli_corrupt": {"payload": broken},
        "cs_cli_no_window": {"payload": broken, "window_start": "?"},
        "ipn_cli_corrupt": {"kind": "ipn", "provider": "paypal", "raw": "abc"},
        "cs_cli_bad_count": {"payload": json.dumps(sound.to_payload()), "attempts": "x"},
    }
    for item, fields in items.items():
        base = {"kind": "conversion", "provider": "stripe", "external_id": item}
        ledger.enqueue(
            item,
            f"rb:seen:stripe:evt_{item}",
            {**base, "event_id": f"evt_{item}", "received_at": time.time(), **fields},
        )
    post_checkout(client, "cs_cli_sound")
    # Left to its 14 s lease, a crashing item would be tried again and again, never dead.
    wait_dead_lettered(redis_url, 3, timeout=10)

    entries = {e["id"]: e for e in dlq_list(cli)}
    assert set(entries) == {"cs_cli_corrupt", "cs_cli_no_window", "ipn_cli_corrupt"}
    for entry in entries.values():
        assert entry["reason"] == "crashed"
        assert entry["status"] is None
    assert entries["cs_cli_corrupt"]["response"] == "attempt crashed: JSONDecodeError"
    assert entries["ipn_cli_corrupt"]["response"] == "attempt crashed: Error"  # binascii's
    assert entries["cs_cli_corrupt"]["payload"] == broken  # shown as stored
    assert entries["cs_cli_corrupt"]["attempts"] > 1  # retried on the backoff first
    assert entries["cs_cli_no_window"]["attempts"] == 1  # no window to retry in
    assert "cs_cli_corrupt" in ok(cli("dlq", "show", "cs_cli_corrupt"))
    refcampaign.wait_for(2)
    assert sorted(p["externalId"] for p in refcampaign.postbacks()) == [
        "cs_cli_bad_count",
        "cs_cli_sound",
    ]
    assert ledger.get("cs_cli_bad_count")["attempts"] == "1"  # type: ignore[index]
    counts = status(cli)
    assert counts["crashed"] >= 3 and counts["dead_lettered"] == 3
    metrics = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'refbridge_postbacks_total\{outcome="crashed",reason=""\} [1-9]', metrics)
    assert 'refbridge_postbacks_total{outcome="dead_lettered",reason="crashed"} 2.0' in metrics
    assert re.search(r'refbridge_ipn_verifications_total\{outcome="crashed"\} [1-9]', metrics)
    assert 'refbridge_ipn_verifications_total{outcome="dead_lettered"} 1.0' in metrics
    log = short_lived_worker.output()
    assert "attempt_crashed" in log and '"outcome":"dead_lettered"' in log


def test_output_cut_short_by_its_reader_is_no_traceback(env):
    # `refbridge status | head -0`: the reader is gone before refbridge writes a byte (our end
    # of the pipe closes while it still imports).
    cli = subprocess.Popen(
        [REFBRIDGE, "status", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert cli.stdout is not None and cli.stderr is not None
    cli.stdout.close()
    assert "Traceback" not in cli.stderr.read().decode()
    assert cli.wait(20) == 141
