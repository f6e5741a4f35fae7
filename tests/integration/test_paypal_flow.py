"""PayPal IPN end to end: real app, Redis, Celery worker, PayPal and RefCampaign stand-ins."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.delivery.intake import ipn_item_id
from bridge.delivery.keys import DUE, item_key
from bridge.delivery.stats import stat
from tests.fixtures import paypal_fixture
from tests.settled import counter, logged, recorded
from tests.standins.paypal import PayPalVerifier
from tests.standins.refcampaign import RefCampaign

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
IPN_INVALID = stat("webhooks", provider="paypal", outcome="rejected", reason="ipn_invalid")
SAME_MESSAGE = stat("webhooks", provider="paypal", outcome="duplicate", reason="same_message")


def ipn(client: Any, paypal: PayPalVerifier, raw: bytes, *, genuine: bool = True) -> None:
    if genuine:
        paypal.send(raw)
    response = client.post("/webhooks/paypal/ipn", data=raw, headers=FORM)
    assert response.status_code == 200
    assert response.data == b""


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "boxbilling__web_accept_completed.txt",
            {
                "externalId": "8X786252873429051",
                "conversionType": "SALE",
                "amount": 595,
                "currency": "USD",
                "customerId": "29NE5SEU5VR2E",
                "convertedAt": "2012-03-01T16:26:14Z",
                "metadata": {
                    "source": "paypal",
                    "txnType": "web_accept",
                    "ipnTrackId": "6fd802df6f247",
                },
            },
        ),
        (
            "django_paypal__cart_eur_windows1252_nonascii.txt",
            {
                "externalId": "KW31266C37C2593K4",
                "conversionType": "SALE",
                "amount": 300,
                "currency": "EUR",
                "sessionId": "blahblah",
                "customerId": "6EQ6SKDFMPU36",
                "convertedAt": "2014-06-27T10:06:57Z",
                "metadata": {"source": "paypal", "txnType": "cart", "ipnTrackId": "a48170aadb705"},
            },
        ),
        (
            "offsite_payments__web_accept_completed_cad.txt",
            {
                "externalId": "6G996328CK404320L",
                "conversionType": "SALE",
                "amount": 50000,
                "currency": "CAD",
                "customerId": "EVMXCLDZJV77Q",
                "convertedAt": "2005-04-15T22:23:54Z",
                "metadata": {"source": "paypal", "txnType": "web_accept"},
            },
        ),
    ],
)
def test_verified_ipn_becomes_the_documented_payload(
    client, worker, paypal, refcampaign, fixture, expected
):
    raw = paypal_fixture(fixture)
    ipn(client, paypal, raw)
    [payload] = refcampaign.wait_for(1)
    email_hash = payload.pop("customerEmailHash")
    assert len(email_hash) == 64
    assert payload == expected
    assert paypal.requests[0]["body"] == b"cmd=_notify-validate&" + raw


def test_utf8_message_is_verified_byte_for_byte(client, worker, paypal, refcampaign):
    raw = (
        b"txn_type=web_accept&payment_status=Completed&txn_id=UTF8TXN1&mc_gross=10.00&"
        b"mc_currency=EUR&first_name=J%C3%B6rg%20M%C3%BCller&payer_email=j%C3%B6rg%40example.de&"
        b"custom=rcsid%3Drcs_1%26cid%3Dclk_9&charset=UTF-8&payment_date=10%3A00%3A00+Jul+04%2C"
        b"+2024+PDT&ipn_track_id=utf8track"
    )
    ipn(client, paypal, raw)
    [payload] = refcampaign.wait_for(1)
    assert payload["sessionId"] == "rcs_1"
    assert payload["clickId"] == "clk_9"
    assert payload["convertedAt"] == "2024-07-04T17:00:00Z"
    assert paypal.requests[0]["body"].endswith(raw)


def test_forged_ipn_is_rejected_and_never_delivered(client, worker, paypal, refcampaign, env):
    r = redis_client(env)
    raw = paypal_fixture("boxbilling__web_accept_completed.txt").replace(b"5.95", b"9999.00")
    ipn(client, paypal, raw, genuine=False)
    # The attempt's outcome, logged once the ledger recorded it: the item dropped, nothing of it
    # left to retry, so no later attempt can verify it again or deliver it.
    [line] = logged(worker, "attempt_finished", item=ipn_item_id(raw))
    assert line["outcome"] == "rejected"
    assert counter(r, IPN_INVALID) == 1
    assert not r.exists(item_key(ipn_item_id(raw))) and r.zcard(DUE) == 0
    assert len(paypal.requests) == 1  # INVALID is never retried
    assert refcampaign.requests == []


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(b"Pending", "verified"), (b"Refunded", "rejected"), (b"Denied", "verified")],
)
def test_unpaid_statuses_give_no_postback(
    client, worker, paypal, refcampaign, env, status, outcome
):
    r = redis_client(env)
    raw = paypal_fixture("boxbilling__web_accept_completed.txt").replace(
        b"payment_status=Completed", b"payment_status=" + status
    )
    ipn(client, paypal, raw)
    # Verified, then ignored (status `verified` with its reason) or rejected (a refund naming no
    # sale): a conversion would have been recorded before that, and none was, nor is any work
    # left in the ledger; so nothing is on its way to RefCampaign.
    recorded(r, {ipn_item_id(raw): outcome})
    assert not r.exists(item_key("8X786252873429051"))
    assert r.zcard(DUE) == 0
    assert len(paypal.requests) == 1
    assert refcampaign.requests == []


def test_resent_ipn_and_status_change_give_one_postback(client, worker, paypal, refcampaign, env):
    r = redis_client(env)
    completed = paypal_fixture("boxbilling__subscr_payment_completed.txt")
    ipn(client, paypal, completed)
    ipn(client, paypal, completed)  # PayPal resends until it gets a 200
    assert counter(r, SAME_MESSAGE) == 1  # known at once, by the web: nothing new recorded
    pending = completed.replace(b"payment_status=Completed", b"payment_status=Pending")
    ipn(client, paypal, pending)
    again = completed.replace(b"ipn_track_id=54b4dbfade396", b"ipn_track_id=54b4dbfade397")
    ipn(client, paypal, again)  # a new message for the same transaction
    # Each message verified (a conversion is recorded before its message is marked so) and the
    # one conversion delivered by a single attempt: nothing is left to send.
    items = recorded(
        r,
        {
            ipn_item_id(completed): "verified",
            ipn_item_id(pending): "verified",
            ipn_item_id(again): "verified",
            "6SR99524AP993094V": "delivered",
        },
    )
    assert items["6SR99524AP993094V"]["attempts"] == "1"
    assert counter(r, stat("webhooks", provider="paypal", outcome="duplicate")) == 1  # `again`
    assert r.zcard(DUE) == 0
    assert len(refcampaign.requests) == 1


def test_verifier_outage_is_retried(client, worker, paypal, refcampaign):
    paypal.fail_next(503, 503)
    ipn(client, paypal, paypal_fixture("boxbilling__web_accept_completed.txt"))
    refcampaign.wait_for(1, timeout=20)
    assert len(paypal.requests) == 3


def test_foreign_receiver_is_rejected(env, tmp_path, paypal, refcampaign):
    from bridge import create_app
    from config import Settings
    from tests.processes import WorkerProcess

    env = {**env, "PAYPAL_RECEIVER_EMAILS": "shop@example.com"}
    r = redis_client(env)
    client = create_app(Settings.from_env(env)).test_client()
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        raw = paypal_fixture("boxbilling__web_accept_completed.txt")
        ipn(client, paypal, raw)
        # Verified and rejected: no conversion recorded, no work left; nothing will be sent.
        [item] = recorded(r, {ipn_item_id(raw): "rejected"}).values()
        assert item["reason"] == "foreign_receiver"
        assert not r.exists(item_key("8X786252873429051"))
        assert r.zcard(DUE) == 0
        assert refcampaign.requests == []
    finally:
        proc.stop()


def test_stand_in_refuses_reencoded_message(paypal: PayPalVerifier, refcampaign: RefCampaign):
    """The verifier stand-in itself must tell a byte-exact echo from a re-encoded one."""
    import requests

    raw = paypal_fixture("django_paypal__web_accept_ipn_simulator.txt")
    paypal.send(raw)
    url = paypal.verify_url
    exact = requests.post(url, data=b"cmd=_notify-validate&" + raw, headers=FORM, timeout=5)
    reencoded = requests.post(
        url, data=b"cmd=_notify-validate&" + raw.replace(b"%20", b"+"), headers=FORM, timeout=5
    )
    assert (exact.text, reencoded.text) == ("VERIFIED", "INVALID")


# --- what a forgery leaves behind -------------------------------------------------------------


def redis_client(env: dict[str, str]) -> Any:
    import redis

    return redis.Redis.from_url(env["REDIS_URL"])


def everything(r: Any) -> dict[str, tuple[int, bytes]]:
    """Every key with its TTL (-1: none) and a dump of its value, to search for the body."""
    return {key.decode(): (r.ttl(key), r.dump(key) or b"") for key in r.scan_iter("*")}


def test_forged_ipn_leaves_no_body_and_no_lasting_record(env, client, worker, paypal, refcampaign):
    import base64

    r = redis_client(env)
    raw = paypal_fixture("boxbilling__web_accept_completed.txt").replace(b"5.95", b"9999.00")
    ipn(client, paypal, raw, genuine=False)
    # Logged after the item is dropped and its rejection listed (two round trips).
    [line] = logged(worker, "attempt_finished", item=ipn_item_id(raw))
    assert line["outcome"] == "rejected"
    keys = everything(r)
    for name, (_, value) in keys.items():
        assert raw not in value and base64.b64encode(raw) not in value, name
    [seen] = [name for name in keys if name.startswith("rb:seen:")]
    assert 0 < keys[seen][0] <= 3600
    lasting = {name for name, (ttl, _) in keys.items() if ttl == -1}
    lasting -= {name for name in lasting if name.startswith("_kombu.binding.")}  # Celery's own
    # Counters, the bounded rejection list, the bookkeeping of the queue and the workers'
    # heartbeats; nothing per message.
    assert lasting <= {"rb:stats", "rb:rejected", "rb:due", "rb:undelivered", "rb:workers"}, lasting
    assert not any(name.startswith(("rb:events:", "rb:id:")) for name in keys)  # no story
    [entry] = [json.loads(line) for line in r.lrange("rb:rejected", 0, -1)]
    assert (entry["reason"], entry["event_id"]) == ("ipn_invalid", "6fd802df6f247")
    stats = r.hgetall("rb:stats")
    assert stats[b"webhooks:outcome=rejected,provider=paypal,reason=ipn_invalid"] == b"1"
    # PayPal's resend (or an attacker's replay) of the same bytes is known without a new check:
    # the web counts it a duplicate before it answers, and records nothing a worker could take.
    ipn(client, paypal, raw, genuine=False)
    assert counter(r, SAME_MESSAGE) == 1
    assert not list(r.scan_iter("rb:item:*"))
    assert r.zcard(DUE) == 0
    assert len(paypal.requests) == 1
    assert refcampaign.requests == []


def test_rejection_list_is_bounded(env):
    from bridge.delivery.keys import REJECTED_KEEP
    from bridge.delivery.ledger import Ledger

    r = redis_client(env)
    ledger = Ledger(r)
    for n in range(REJECTED_KEEP + 5):
        ledger.record_rejected(json.dumps({"n": n}))
    assert r.llen("rb:rejected") == REJECTED_KEEP
    assert json.loads(r.lindex("rb:rejected", 0)) == {"n": REJECTED_KEEP + 4}


@pytest.mark.parametrize("charset", [b"punycode", b"x-mac-unknown", b"EUC-TW", b"utf8"])
def test_undocumented_charset_is_decoded_as_windows_1252(
    client, worker, paypal, refcampaign, charset
):
    raw = (
        b"txn_type=web_accept&payment_status=Completed&txn_id=CHARSET1&mc_gross=10.00"
        b"&mc_currency=EUR&custom=rcsid%3D%E9t%E9%80&charset=" + charset + b"&ipn_track_id=cs1"
    )
    ipn(client, paypal, raw)
    [payload] = refcampaign.wait_for(1)
    assert payload["sessionId"] == "été€"
