"""Catch-up end to end: the Procfile's web and worker, real Redis, the RefCampaign and Stripe API
stand-ins, and `refbridge catchup` run as the console script.

Webhooks reach the web for some orders; for the others the web is down. Catch-up delivers
exactly the missing ones, once, by command or by itself (CATCHUP_INTERVAL), one run at a time
across workers, and through a worker killed with SIGKILL in the middle of a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge.catchup.run import RUNS
from bridge.catchup.schedule import LOCK
from bridge.delivery.keys import UNDELIVERED
from bridge.ops.embedded_redis import free_port
from tests.processes import WebProcess, WorkerProcess
from tests.signing import stripe_body, stripe_headers
from tests.standins.refcampaign import RefCampaign
from tests.standins.stripe_api import (
    StripeAPI,
    rate_limited,
    redirect,
    sample_events,
    server_error,
    slow,
)
from tests.waiting import wait_until

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")
STRIPE_KEY = "rk_test_catchup_2f9c41e7"


@pytest.fixture(scope="module")
def _stripe_api() -> Iterator[StripeAPI]:
    server = StripeAPI(STRIPE_KEY).start()
    yield server
    server.stop()


@pytest.fixture()
def stripe_api(_stripe_api: StripeAPI) -> StripeAPI:
    _stripe_api.reset()
    return _stripe_api


@pytest.fixture()
def cu_env(env: dict[str, str], stripe_api: StripeAPI) -> dict[str, str]:
    return {**env, "STRIPE_API_KEY": STRIPE_KEY, "STRIPE_API_URL": stripe_api.url}


def catchup(env: dict[str, str], *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`refbridge catchup ARGS…` as the console script, output captured."""
    options: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 60, **kw}
    return subprocess.run([REFBRIDGE, "catchup", *args], env=env, **options)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def post_webhook(web: WebProcess, event: dict[str, Any]) -> None:
    body = stripe_body(event)
    answer = requests.post(f"{web.url}/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text


def delivered(refcampaign: RefCampaign) -> Counter[str]:
    """Accepted postbacks per externalId."""
    return Counter(p["externalId"] for p in refcampaign.postbacks())


def settle(refcampaign: RefCampaign, expected: set[str], timeout: float = 20.0) -> None:
    """Wait until every id in `expected` arrived, then a moment more for any duplicate."""
    deadline = time.monotonic() + timeout
    while not expected <= set(delivered(refcampaign)):
        assert time.monotonic() < deadline, f"missing {expected - set(delivered(refcampaign))}"
        time.sleep(0.1)
    time.sleep(1.0)


def ids_of(events: list[dict[str, Any]]) -> set[str]:
    return {e["data"]["object"]["id"] for e in events}


def test_catchup_delivers_exactly_the_missed_webhooks_once(
    cu_env: dict[str, str], stripe_api: StripeAPI, refcampaign: RefCampaign, tmp_path: Path
) -> None:
    now = int(time.time())
    events = sample_events(8, start=now - 600, step=30, prefix="e2e")
    arrived, missed, late = events[:4], events[4:7], events[7]
    stripe_api.add(events)
    worker = WorkerProcess(cu_env, tmp_path / "worker.log").start()
    web = WebProcess(cu_env, tmp_path / "web.log", free_port()).start()
    try:
        for event in arrived:
            post_webhook(web, event)
        web.stop()
        with pytest.raises(requests.ConnectionError):  # the others never arrive: the web is down
            post_webhook(web, missed[0])
        settle(refcampaign, ids_of(arrived))

        dry = summary_of(catchup(cu_env, "stripe", "--since", "1h", "--dry-run", "--json"))
        assert (dry["seen"], dry["newlyRecorded"], dry["alreadyRecorded"]) == (8, 4, 4)
        time.sleep(0.5)
        assert set(delivered(refcampaign)) == ids_of(arrived)  # a dry run records nothing

        # The last one's webhook arrives while catch-up is reading the first page (slowly).
        web.start()
        stripe_api.script(slow(1.5))
        run = subprocess.Popen(
            [REFBRIDGE, "catchup", "stripe", "--since", "1h", "--json"],
            env=cu_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        post_webhook(web, late)
        out, err = run.communicate(timeout=60)
        first = summary_of(subprocess.CompletedProcess(run.args, run.returncode, out, err))
        assert first["seen"] == 8 and first["newlyRecorded"] == 3
        assert first["alreadyRecorded"] == 5 and first["error"] is None
        settle(refcampaign, ids_of(events))
        assert delivered(refcampaign) == Counter({i: 1 for i in ids_of(events)})

        second = summary_of(catchup(cu_env, "stripe", "--since", "1h", "--json"))
        assert (second["newlyRecorded"], second["alreadyRecorded"]) == (0, 8)
        text = catchup(
            cu_env,
            "stripe",
            "--since",
            (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))),
        )
        assert text.returncode == 0 and "already recorded  8" in text.stdout
        time.sleep(1.0)
        assert delivered(refcampaign) == Counter({i: 1 for i in ids_of(events)})
        metrics = requests.get(f"{web.url}/metrics", timeout=10).text
        assert 'refbridge_catchup_last_run_recovered{provider="stripe"} 0.0' in metrics
        assert 'refbridge_catchup_last_run_timestamp_seconds{provider="stripe"} 1.' in metrics
        assert (
            'refbridge_catchup_events_total{outcome="accepted",provider="stripe",reason=""} 3.0'
        ) in metrics
    finally:
        web.stop()
        worker.stop()


def test_429_is_honoured_and_requests_stay_under_20_per_second(
    cu_env: dict[str, str], stripe_api: StripeAPI
) -> None:
    # Failed delayed payments: mapped to nothing, so pages are cheap and, without the throttle,
    # would be asked for faster than 20 a second.
    events = sample_events(3000, start=int(time.time()) - 3000, prefix="rate")
    for event in events:
        event["type"] = "checkout.session.async_payment_failed"
    stripe_api.add(events)
    stripe_api.script(rate_limited())
    result = summary_of(catchup(cu_env, "stripe", "--since", "1h", "--json"))
    assert result["ignoredByReason"] == {"payment_failed": 3000} and result["requests"] == 31
    got = stripe_api.event_requests()
    assert [r["status"] for r in got[:2]] == [429, 200]
    assert got[1]["at"] - got[0]["ended"] >= 0.45  # backed off, then the same page again
    assert "starting_after" not in got[1]["path"]
    starts = sorted(r["at"] for r in got)
    # No 21 requests within one second (a small allowance for the stand-in's clock).
    assert min(b - a for a, b in zip(starts, starts[20:], strict=False)) >= 0.95


def test_a_progress_bar_on_a_terminal_and_plain_lines_otherwise(
    cu_env: dict[str, str], stripe_api: StripeAPI
) -> None:
    stripe_api.add(sample_events(450, start=int(time.time()) - 1800, step=2, prefix="tty"))
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once the terminal's last writer is gone
            while chunk := os.read(main, 65536):
                chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    result = catchup(
        cu_env,
        "stripe",
        "--since",
        "1h",
        stderr=terminal,
        capture_output=False,
        stdout=subprocess.PIPE,
    )
    os.close(terminal)
    reader.join(5)
    os.close(main)
    screen = b"".join(chunks).decode()
    assert result.returncode == 0 and "newly recorded    450" in result.stdout
    assert "stripe catch-up: 100%|" in screen and "450 events, 450 new, 0 known" in screen
    plain = catchup(cu_env, "stripe", "--since", "1h")  # stderr is a pipe: no bar
    assert plain.stderr.splitlines() == ["catchup stripe: page 1, 100 events seen, 0 new"]


def test_a_redirect_is_never_followed_and_a_5xx_is_retried(
    cu_env: dict[str, str], stripe_api: StripeAPI
) -> None:
    stripe_api.add(sample_events(3, start=int(time.time()) - 60, prefix="redir"))
    # Followed, the redirect would send the key to the page's host: here the stand-in itself.
    stripe_api.script(redirect(f"{stripe_api.url}/login"), server_error(503))
    result = catchup(cu_env, "stripe", "--since", "1h", "--json")
    assert summary_of(result)["newlyRecorded"] == 3
    assert [r["path"].split("?")[0] for r in stripe_api.requests] == ["/v1/events"] * 3
    retries = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    host = stripe_api.url.removeprefix("http://")
    assert [r["error"] for r in retries] == [f"redirect to {host}", "Stripe answered 503"]
    assert all(r["event"] == "catchup_retry" for r in retries)


@pytest.mark.parametrize("key", ["", "sk_test_wrong_4c1d7e"])
def test_a_missing_or_refused_key_fails_with_one_line_naming_it(
    cu_env: dict[str, str], key: str
) -> None:
    result = catchup({**cu_env, "STRIPE_API_KEY": key}, "stripe", "--since", "1h", "--json")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "STRIPE_API_KEY" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and (not key or key not in result.stderr)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("stripe", "--since", "1h"), "STRIPE_API_KEY"),
        (("stripe", "--since", "1x"), "'1x'"),
        (("stripe", "--since", "1h", "--until", "yesterday"), "'yesterday'"),
        (("paypal", "--since", "1h"), "PAYPAL_CLIENT_ID"),
    ],
)
def test_arguments_and_credentials_are_checked_before_redis_is_needed(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    # No REDIS_URL and no `refbridge run` here: the first problem named is the command's own.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "STRIPE_", "PAYPAL_", "REFCAMPAIGN_"))
    }
    result = catchup({**clean, "STRIPE_API_KEY": ""}, *args, cwd=tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "REDIS_URL" not in lines[0], result.stderr


def runs(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(r) for r in client.lrange(RUNS, 0, -1)]


def test_workers_catch_up_by_themselves_one_at_a_time_through_a_kill(
    cu_env: dict[str, str], stripe_api: StripeAPI, refcampaign: RefCampaign, tmp_path: Path
) -> None:
    # Stripe alone (PayPal unconfigured): the runs below are all Stripe's.
    env = {**cu_env, "CATCHUP_INTERVAL": "2", "CATCHUP_WINDOW": "3600", "PAYPAL_WEBHOOK_ID": ""}
    events = sample_events(350, start=int(time.time()) - 1800, prefix="auto")
    stripe_api.add(events)
    stripe_api.delay = 0.4  # four pages: a run lasts about two seconds
    client = redis.Redis.from_url(env["REDIS_URL"])
    workers = [WorkerProcess(env, tmp_path / f"worker{n}.log", concurrency=1) for n in (1, 2)]
    try:
        for worker in workers:
            worker.start()
        # Kill the holder in the middle of its first run: after a page, before the last, while
        # it waits for the next page with everything it recorded delivered. (A kill during a
        # postback may send that one again once its lease ends: at-least-once, which RefCampaign
        # absorbs by externalId, but not what this test is about. The holder's own pool
        # delivers what its run records at once, so a kill timed by pages alone hit one.)
        holder = wait_until(lambda: client.get(LOCK), 20, "a run to start").decode()
        wait_until(
            lambda: (
                len(stripe_api.event_requests()) >= 1
                and stripe_api.in_flight == 1
                and len(refcampaign.accepted) > 0
                and client.zcard(UNDELIVERED) == 0
            ),
            10,
            "a page recorded and delivered, the next one asked for",
        )
        victim = next(w for w in workers if w.proc and f":{w.proc.pid}:" in holder)
        victim.kill()
        survivor = next(w for w in workers if w is not victim)
        settle(refcampaign, ids_of(events), timeout=40)
        assert delivered(refcampaign) == Counter({i: 1 for i in ids_of(events)})
        wait_until(lambda: len(runs(client)) >= 2, 20, "two completed runs")
    finally:
        for worker in workers:
            worker.stop()
    done = sorted(runs(client), key=lambda r: r["startedAt"])
    assert {r["pid"] for r in done} == {survivor.proc.pid if survivor.proc else 0}
    assert all(r["error"] is None and r["trigger"] == "auto" for r in done)
    # The killed run had recorded its first page: nothing it recorded was lost or sent twice.
    assert sum(r["newlyRecorded"] for r in done) <= 250
    for before, after in zip(done, done[1:], strict=False):
        assert after["startedAt"] >= before["finishedAt"]  # one at a time
        assert after["startedAt"] - before["startedAt"] >= 1.9  # once per interval, not per worker
    assert stripe_api.max_in_flight == 1  # never two runs reading at once, the killed one included
    lines = [json.loads(x) for x in survivor.output().splitlines() if x.startswith("{")]
    recovered = [x for x in lines if x.get("event") == "catchup_recovered"]
    assert recovered and recovered[0]["level"] == "warning" and recovered[0]["recovered"] > 0
    status = subprocess.run(
        [REFBRIDGE, "status", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    assert json.loads(status.stdout)["catchup"]["stripe"]["trigger"] == "auto"
