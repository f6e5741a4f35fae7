"""PayPal REST webhooks end to end: the Procfile's worker, a real Redis, the PayPal API and IPN
stand-ins and RefCampaign's. One worker serves the whole module; each test uses its own ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge import create_app
from bridge.delivery import intake
from bridge.delivery.keys import item_key
from bridge.delivery.ledger import Ledger
from bridge.ops import reports
from config import Settings
from tests.conftest import module_env
from tests.fixtures import paypal_webhook_fixture, paypal_webhook_fixture_names
from tests.processes import WorkerProcess
from tests.standins.http import Handler, StandInServer
from tests.standins.paypal import PayPalVerifier
from tests.standins.paypal_api import (
    ORDERS_PATH,
    TOKEN_PATH,
    VERIFY_PATH,
    PayPalApi,
    Scripted,
    transmission,
)
from tests.standins.refcampaign import RefCampaign
from tests.waiting import wait_until

ROUTE = "/webhooks/paypal"


@dataclasses.dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    client: Any
    worker: WorkerProcess
    refcampaign: RefCampaign
    paypal: PayPalVerifier
    api: PayPalApi

    def post(self, raw: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(
            ROUTE, data=raw, headers={**headers, "Content-Type": "application/json"}
        )

    def deliver(self, raw: bytes) -> None:
        """Post `raw` as PayPal would: with the headers it went out with."""
        response = self.post(raw, self.api.send(raw))
        assert response.status_code == 200, response.data


@pytest.fixture(scope="module")
def stack(
    redis_server: Any,
    _refcampaign: RefCampaign,
    _paypal: PayPalVerifier,
    _paypal_api: PayPalApi,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env = module_env(redis_server, _refcampaign, _paypal, _paypal_api)
    settings = Settings.from_env(env)
    log = tmp_path_factory.mktemp("paypal_webhooks") / "worker.log"
    worker = WorkerProcess(env, log).start()
    try:
        client = create_app(settings).test_client()
        yield Stack(env, settings, client, worker, _refcampaign, _paypal, _paypal_api)
    finally:
        worker.stop()


@pytest.fixture()
def pp(stack: Stack) -> Stack:
    stack.refcampaign.reset()
    stack.paypal.reset()
    stack.api.reset(keep_tokens=True)
    return stack


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6).upper()


def capture(
    capture_id: str | None = None,
    *,
    custom_id: str = "rcs_wh",
    value: str = "100.00",
    order_id: str = "5O190127TN364715T",
) -> bytes:
    """A PAYMENT.CAPTURE.COMPLETED event shaped like PayPal's published sample."""
    capture_id = capture_id or new_id("7NW8")
    event = {
        "id": new_id("WH-58D329510W468432D-"),
        "create_time": "2026-12-03T10:18:47.651Z",
        "resource_type": "capture",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "summary": f"Payment completed for $ {value} USD",
        "resource": {
            "amount": {"currency_code": "USD", "value": value},
            "seller_protection": {
                "status": "ELIGIBLE",
                "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
            },
            "supplementary_data": {"related_ids": {"order_id": order_id}},
            "final_capture": True,
            "custom_id": custom_id,
            "seller_receivable_breakdown": {
                "gross_amount": {"currency_code": "USD", "value": value},
                "paypal_fee": {"currency_code": "USD", "value": "3.00"},
                "net_amount": {"currency_code": "USD", "value": "97.00"},
            },
            "status": "COMPLETED",
            "create_time": "2026-12-03T10:18:45Z",
            "update_time": "2026-12-03T10:18:45Z",
            "id": capture_id,
        },
        "links": [
            {
                "href": "https://api.paypal.com/v1/notifications/webhooks-events/WH-58D3",
                "rel": "self",
                "method": "GET",
            }
        ],
        "event_version": "1.0",
        "resource_version": "2.0",
    }
    # PayPal's own spacing; the verification must carry these exact bytes.
    return json.dumps(event, indent=1).encode()


def postbacks_for(refcampaign: RefCampaign, external_id: str) -> list[dict[str, Any]]:
    return [p for p in refcampaign.postbacks() if p.get("externalId") == external_id]


def event_id(raw: bytes) -> str:
    return str(json.loads(raw)["id"])


# --- end to end ---------------------------------------------------------------------------------


def test_capture_becomes_a_postback(pp: Stack) -> None:
    raw = capture(custom_id="rcsid=rcs_cap&cid=clk_cap")
    pp.deliver(raw)
    [payload] = pp.refcampaign.wait_for(1)
    capture_id = json.loads(raw)["resource"]["id"]
    assert payload == {
        "externalId": capture_id,
        "conversionType": "SALE",
        "amount": 10000,
        "currency": "USD",
        "sessionId": "rcs_cap",
        "clickId": "clk_cap",
        "convertedAt": "2026-12-03T10:18:45Z",
        "metadata": {
            "source": "paypal",
            "eventId": event_id(raw),
            "eventType": "PAYMENT.CAPTURE.COMPLETED",
        },
    }
    [verification] = pp.api.calls(VERIFY_PATH)
    assert raw in verification["body"]  # the event as received, not parsed and re-serialised
    line = wait_until(
        lambda: [
            entry
            for entry in map(json.loads, pp.worker.output().splitlines())
            if entry.get("event") == "attempt_finished"
            and entry.get("provider_event_id") == event_id(raw)
        ],
        what="the attempt's log line",
    )
    assert line[0]["outcome"] == "verified"


def test_every_real_sample_is_verified_and_only_payments_are_delivered(pp: Stack) -> None:
    names = paypal_webhook_fixture_names()
    for name in names:
        pp.deliver(paypal_webhook_fixture(name))
    accepted = pp.refcampaign.wait_for(2)
    wait_until(lambda: len(pp.api.verdicts) == len(names), what="every verification")
    assert set(pp.api.verdicts) == {"SUCCESS"}
    time.sleep(1.0)
    # The Orders v2 capture and the subscription sale that carry an attribution id; the other
    # sales have none (unattributed), the other event types are not payments (ignored).
    assert {p["externalId"]: p["amount"] for p in accepted} == {
        "5VK462069F664902F": 1000,
        "8RS6210148826604N": 601,
    }
    assert len(pp.refcampaign.requests) == 2


def test_a_capture_without_attribution_gets_its_order_payer_email_hash(pp: Stack) -> None:
    order_id = new_id("5O19")
    pp.api.add_order(order_id, " Buyer@Example.com ")
    pp.api.script(ORDERS_PATH, Scripted(503))  # the look-up fails once: retried
    raw = capture(custom_id="", order_id=order_id)
    pp.deliver(raw)
    [payload] = pp.refcampaign.wait_for(1)
    assert payload["customerEmailHash"] == hashlib.sha256(b"buyer@example.com").hexdigest()
    assert "sessionId" not in payload
    assert len(pp.api.calls(ORDERS_PATH + "/" + order_id)) == 2
    assert b"example.com" not in pp.worker.output().encode()
    r = redis.Redis.from_url(pp.env["REDIS_URL"])
    assert not [k for k in r.scan_iter("rb:item:*") if b"example.com" in str(r.hgetall(k)).encode()]


def test_forged_event_is_never_delivered_nor_retried(pp: Stack) -> None:
    from tests.settled import logged, recorded

    genuine = capture()
    forged = genuine.replace(b'"100.00"', b'"9999.00"')  # same event id, altered
    pp.api.send(genuine)
    assert pp.post(forged, transmission(event_id(genuine))).status_code == 200
    pp.deliver(genuine)  # a forgery borrowing the id does not shadow the genuine event
    [payload] = pp.refcampaign.wait_for(1)
    assert payload["amount"] == 10000
    # What each came to, as recorded after PayPal answered: the forgery's one attempt rejected
    # it (a FAILURE retried would say `retried`) and dropped it, leaving nothing to retry; the
    # genuine event verified, its conversion delivered by one attempt.
    r = redis.Redis.from_url(pp.env["REDIS_URL"])
    forged_item = intake.paypal_event_item_id(event_id(genuine), forged)
    genuine_item = intake.paypal_event_item_id(event_id(genuine), genuine)
    capture_id = json.loads(genuine)["resource"]["id"]
    [line] = logged(pp.worker, "attempt_finished", item=forged_item)
    assert line["outcome"] == "rejected"
    items = recorded(r, {genuine_item: "verified", capture_id: "delivered"})
    assert items[capture_id]["attempts"] == "1"
    assert sorted(pp.api.verdicts) == ["FAILURE", "SUCCESS"]
    assert len(pp.refcampaign.requests) == 1
    # Nothing of the forgery is kept but its marker and counters.
    assert not r.exists(item_key(forged_item))
    assert r.exists(intake.paypal_event_seen_key(forged_item))


def test_resent_event_is_delivered_once(pp: Stack) -> None:
    from bridge.delivery.stats import stat
    from tests.settled import counter, recorded

    r = redis.Redis.from_url(pp.env["REDIS_URL"])
    same_event = stat(
        "webhooks", provider="paypal_webhook", outcome="duplicate", reason="same_event"
    )
    before = counter(r, same_event)  # the module's Redis: earlier tests counted too
    raw = capture()
    headers = pp.api.send(raw)
    assert pp.post(raw, headers).status_code == 200
    assert pp.post(raw, headers).status_code == 200  # PayPal resends until it gets a 200
    assert pp.post(raw, transmission(event_id(raw))).status_code == 200  # a new transmission
    # Both resends known by the web before it answered (the same bytes, the same item); the
    # event verified by one attempt and its conversion delivered by one: nothing left to send.
    assert counter(r, same_event) == before + 2
    item = intake.paypal_event_item_id(event_id(raw), raw)
    capture_id = json.loads(raw)["resource"]["id"]
    items = recorded(r, {item: "verified", capture_id: "delivered"})
    assert (items[item]["attempts"], items[capture_id]["attempts"]) == ("1", "1")
    assert len(pp.refcampaign.requests) == 1
    assert len(pp.api.calls(VERIFY_PATH)) == 1


@pytest.mark.parametrize("ipn_first", [True, False], ids=["ipn_first", "webhook_first"])
def test_ipn_twin_of_a_capture_is_delivered_once(pp: Stack, ipn_first: bool) -> None:
    from tests.settled import logged, recorded

    capture_id = new_id("3C6")
    raw = capture(capture_id, custom_id="rcs_twin")
    ipn = (
        b"txn_type=web_accept&payment_status=Completed&txn_id="
        + capture_id.encode()
        + b"&mc_gross=100.00&mc_currency=USD&custom=rcs_twin&charset=UTF-8"
        b"&payment_date=02%3A18%3A45+Dec+03%2C+2026+PST&ipn_track_id="
        + secrets.token_hex(6).encode()
    )
    pp.paypal.send(ipn)

    def send_ipn() -> None:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert pp.client.post("/webhooks/paypal/ipn", data=ipn, headers=form).status_code == 200

    first, second = (send_ipn, lambda: pp.deliver(raw))
    if not ipn_first:
        first, second = second, first
    first()
    pp.refcampaign.wait_for(1)
    second()
    # The second message's own outcome, once recorded: verified, its conversion a duplicate of
    # the first's (the worker's word for it); the conversion delivered by its one attempt.
    r = redis.Redis.from_url(pp.env["REDIS_URL"])
    ipn_item = intake.ipn_item_id(ipn)
    webhook_item = intake.paypal_event_item_id(event_id(raw), raw)
    [line] = logged(pp.worker, "attempt_finished", item=webhook_item if ipn_first else ipn_item)
    assert line["outcome"] == "duplicate"
    items = recorded(r, {ipn_item: "verified", webhook_item: "verified", capture_id: "delivered"})
    assert items[capture_id]["attempts"] == "1"
    assert len(postbacks_for(pp.refcampaign, capture_id)) == 1


def test_paypal_api_down_for_a_while_then_back_delivers_everything(pp: Stack) -> None:
    pp.api.script(TOKEN_PATH, Scripted(500))
    pp.api.revoke_tokens()  # so that the next verification needs a token, and meets the 500
    pp.api.script(VERIFY_PATH, Scripted(503), Scripted(502), Scripted(hang=3.0), Scripted(500))
    events = [capture() for _ in range(3)]
    for raw in events:
        pp.deliver(raw)
    accepted = pp.refcampaign.wait_for(3, timeout=40)
    assert {p["metadata"]["eventId"] for p in accepted} == {event_id(raw) for raw in events}
    assert pp.api.verdicts.count("SUCCESS") == 3


def test_429_is_retried_after_retry_after(pp: Stack) -> None:
    pp.api.script(VERIFY_PATH, Scripted(429, {"Retry-After": "1"}))
    pp.deliver(capture())
    pp.refcampaign.wait_for(1)
    first, second = pp.api.calls(VERIFY_PATH)[:2]
    # The backoff alone would have retried after 0.3-0.375 s.
    assert second["at"] - first["at"] >= 0.9


def test_redirect_is_never_followed_and_retried(pp: Stack, elsewhere: StandInServer) -> None:
    # Followed, the redirect would take the token and the event to the page it names: here a
    # stand-in of ours, which would record the visit (and answer SUCCESS to anything).
    pp.api.script(VERIFY_PATH, Scripted(302, {"Location": f"{elsewhere.url}/verify"}))
    raw = capture()
    pp.deliver(raw)
    pp.refcampaign.wait_for(1)
    assert elsewhere.requests == []
    capture_id = json.loads(raw)["resource"]["id"].encode()
    assert len([r for r in pp.api.calls(VERIFY_PATH) if capture_id in r["body"]]) == 2


def bearers(pp: Stack, raws: list[bytes]) -> list[list[str]]:
    """The tokens each of `raws` was verified with, call by call."""
    ids = [json.loads(raw)["resource"]["id"].encode() for raw in raws]
    calls = pp.api.calls(VERIFY_PATH)
    return [
        [
            c["headers"].get("Authorization", "").removeprefix("Bearer ")
            for c in calls
            if i in c["body"]
        ]
        for i in ids
    ]


def test_an_expired_token_is_renewed_once(pp: Stack) -> None:
    # Each of the worker's two pool processes caches a token of its own: first make both hold
    # one (events two at a time until two tokens were used), so that after the revocation
    # whichever process verifies next meets a 401.
    warm: list[bytes] = []
    for _ in range(10):
        pair = [capture(), capture()]
        for raw in pair:
            pp.deliver(raw)
        warm += pair
        pp.refcampaign.wait_for(len(warm))
        held = {t for calls in bearers(pp, warm) for t in calls}
        if len(held) >= 2:
            break
    assert len(held) == 2, f"the two pool processes never both verified: {held}"
    issued = pp.api.tokens_issued
    pp.api.revoke_tokens()  # expired at PayPal before the workers' caches say so
    after = [capture(), capture()]
    for raw in after:
        pp.deliver(raw)
    pp.refcampaign.wait_for(len(warm) + len(after))
    renewed = 0
    for calls in bearers(pp, after):
        if calls[0] in held:  # a revoked token: 401, one fresh token, the same call again
            assert len(calls) == 2 and calls[1] not in held, calls
            renewed += 1
        else:  # a process that had renewed already
            assert len(calls) == 1, calls
    assert renewed >= 1
    assert pp.api.tokens_issued == issued + renewed  # once per process that met the 401


def test_a_token_is_cached_until_shortly_before_it_expires(pp: Stack) -> None:
    for _ in range(4):
        pp.deliver(capture())
    pp.refcampaign.wait_for(4)
    # One token per worker process (concurrency 2) at most, never one per event.
    assert pp.api.tokens_issued <= 2


def test_refused_credentials_are_named_and_retried_until_fixed(pp: Stack) -> None:
    pp.api.revoke_tokens()
    pp.api.client_secret = "rotated-secret"
    offset = len(pp.worker.output())
    pp.deliver(capture())
    wait_until(lambda: len(pp.api.calls(TOKEN_PATH)) >= 2, what="token retries")
    assert pp.refcampaign.requests == []
    pp.api.client_secret = pp.settings.paypal_client_secret or ""
    pp.refcampaign.wait_for(1)
    output = pp.worker.output()[offset:]
    assert "PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET" in output
    assert pp.settings.paypal_client_secret not in output


def test_status_and_metrics_show_the_path(pp: Stack) -> None:
    ledger = Ledger(redis.Redis.from_url(pp.env["REDIS_URL"]))
    before = reports.status(ledger)
    pp.deliver(capture())
    raw = capture()
    pp.post(raw, transmission(event_id(raw)))
    pp.refcampaign.wait_for(1)
    wait_until(lambda: len(pp.api.verdicts) == 2)
    # The forgery's verification is counted first, its rejection when it is dropped.
    after = wait_until(
        lambda: (
            (s := reports.status(ledger))["paypal_webhook_rejected"]
            > before["paypal_webhook_rejected"]
            and s
        )
    )
    assert after["paypal_webhook_verified"] == before["paypal_webhook_verified"] + 1
    assert after["paypal_webhook_failure"] == before["paypal_webhook_failure"] + 1
    assert after["paypal_webhook_rejected"] == before["paypal_webhook_rejected"] + 1
    metrics = pp.client.get("/metrics").data.decode()
    assert 'refbridge_paypal_webhook_verifications_total{outcome="verified"}' in metrics
    assert 'refbridge_paypal_webhook_verifications_total{outcome="failure"}' in metrics
    assert 'provider="paypal_webhook",reason="verification_failure"' in metrics


# --- the route ----------------------------------------------------------------------------------


def test_route_is_404_while_the_webhook_id_is_unset(pp: Stack) -> None:
    app = create_app(dataclasses.replace(pp.settings, paypal_webhook_id=None))
    raw = capture()
    response = app.test_client().post(ROUTE, data=raw, headers=transmission(event_id(raw)))
    assert response.status_code == 404


def test_body_limit_is_256_kib(pp: Stack) -> None:
    raw = capture()
    headers = transmission(event_id(raw))
    exact = raw + b" " * (256 * 1024 - len(raw))
    assert pp.post(exact, headers).status_code == 200
    assert pp.post(exact + b" ", headers).status_code == 413


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"id": "WH-1"}', b'{"id": 1, "event_type": "X", "resource": {}}'],
)
def test_a_body_that_is_not_an_event_is_400(pp: Stack, body: bytes) -> None:
    assert pp.post(body, transmission("WH-X")).status_code == 400


@pytest.mark.parametrize("header", list(transmission("WH-X")))
def test_a_missing_or_oversized_transmission_header_is_400(pp: Stack, header: str) -> None:
    raw = capture()
    headers = transmission(event_id(raw))
    del headers[header]
    assert pp.post(raw, headers).status_code == 400
    headers[header] = "x" * 5000
    assert pp.post(raw, headers).status_code == 400


def test_redis_down_is_503(pp: Stack, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = dataclasses.replace(pp.settings, redis_url=f"redis://127.0.0.1:{port}/0")
    raw = capture()
    response = (
        create_app(down).test_client().post(ROUTE, data=raw, headers=transmission(event_id(raw)))
    )
    assert response.status_code == 503


def test_a_worker_without_credentials_names_them_and_retries(pp: Stack, tmp_path: Path) -> None:
    pp.worker.stop()  # the only worker for a while: one that lacks the PayPal credentials
    env = {k: v for k, v in pp.env.items() if k not in ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET")}
    bare = WorkerProcess(env, tmp_path / "bare.log").start()
    try:
        raw = capture()
        pp.deliver(raw)
        wait_until(lambda: bare.output().count('"config_error"') >= 2, what="config errors")
        assert bare.proc is not None and bare.proc.poll() is None
        # Nothing was sent for it without credentials (the module's worker, stopped above, may
        # have finished a late retry of an earlier test's event after the reset).
        own = json.loads(raw)["resource"]["id"].encode()
        assert [r for r in pp.api.requests if own in r["body"]] == []
    finally:
        bare.stop()
        pp.worker.start()
    assert "PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET" in bare.output()
    pp.refcampaign.wait_for(1)  # a worker with them delivers it


def test_paypal_api_down_past_the_window_dead_letters_then_replays(
    pp: Stack, tmp_path: Path
) -> None:
    pp.worker.stop()  # the only worker for a while: one with a 3 s delivery window
    short = WorkerProcess({**pp.env, "DELIVERY_MAX_AGE": "3"}, tmp_path / "short.log").start()
    pp.api.script(VERIFY_PATH, *[Scripted(503)] * 50)
    raw = capture()
    item = intake.paypal_event_item_id(event_id(raw), raw)
    ledger = Ledger(redis.Redis.from_url(pp.env["REDIS_URL"]))
    try:
        pp.deliver(raw)
        wait_until(lambda: item in ledger.dead_letter_ids(), what="the dead letter")
    finally:
        short.stop()
        pp.worker.start()
    entry = reports.dead_letter_entry(ledger, item)
    assert entry is not None and entry["reason"] == "exhausted" and entry["status"] == 503
    assert entry["providerEventId"] == event_id(raw)
    assert pp.refcampaign.requests == []
    with pp.api.lock:
        pp.api.scripted.clear()  # PayPal is back
    assert ledger.replay([item]) == [item]
    [payload] = pp.refcampaign.wait_for(1)
    assert payload["metadata"]["eventId"] == event_id(raw)


class AnyAnswer(Handler):
    """A page a redirect could point at: answers anything with PayPal's SUCCESS, and records it."""

    server: StandInServer

    def answer(self) -> None:
        with self.server.lock:
            self.server.requests.append(self.record(self.read_body()))
        self.reply(200, b'{"verification_status":"SUCCESS"}', {"Content-Type": "application/json"})

    do_GET = do_POST = answer  # noqa: N815 — http.server's naming


@pytest.fixture()
def elsewhere() -> Iterator[StandInServer]:
    server = StandInServer(AnyAnswer).start()
    yield server
    server.stop()
