"""Fuzzing both webhook routes (hypothesis) through the real app and a real Redis.

Properties, whatever the bytes, headers and signatures: the answer is one documented for the
route, never a 5xx and never a traceback; a Stripe event is queued only when it carried a genuine
signature; a PayPal message is queued only as its exact raw bytes, for a worker to verify.
"""

from __future__ import annotations

import base64
import copy
import encodings
import encodings.aliases
import hashlib
import hmac
import json
import pkgutil
import re
import time
from typing import Any
from urllib.parse import quote_from_bytes, quote_plus

import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fixtures import PAYPAL_FIXTURES_DIR, paypal_fixture, stripe_fixture
from tests.signing import OTHER_SECRET, SECRET, stripe_body, stripe_headers

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOLERANCE = 300
STRIPE_ALLOWED = {200, 400, 413}
PAYPAL_ALLOWED = {200, 400, 413}
FORM = "application/x-www-form-urlencoded"
IPN_FIXTURES = sorted(path.name for path in PAYPAL_FIXTURES_DIR.glob("*.txt"))
CHARSETS = sorted(
    set(encodings.aliases.aliases)
    | set(encodings.aliases.aliases.values())
    | {module.name for module in pkgutil.iter_modules(encodings.__path__)}
)


# --- helpers ------------------------------------------------------------------------------------


def fresh(redis_url: str) -> redis.Redis:
    """Redis emptied for one example (the fixture only flushes once per test)."""
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    return r


def items(r: redis.Redis) -> dict[str, dict[bytes, bytes]]:
    """Every ledger item with its fields."""
    return {key.decode(): r.hgetall(key) for key in r.scan_iter("rb:item:*")}  # type: ignore[misc]


def assert_nothing_queued(r: redis.Redis) -> None:
    assert items(r) == {}
    assert r.zcard("rb:due") == 0
    assert r.llen("refbridge") == 0


def assert_sane(response: Any, allowed: set[int]) -> None:
    """An answer the route documents; no traceback; a JSON or empty body."""
    assert response.status_code in allowed, (response.status_code, response.data[:300])
    assert b"Traceback" not in response.data
    if response.data:
        json.loads(response.data)


def checkout_event() -> dict[str, Any]:
    """A paid, attributed checkout session: when its signature is genuine, it is queued."""
    event = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    event["id"] = "evt_fuzz"
    event["created"] = int(time.time())
    event["data"]["object"].update({"id": "cs_fuzz", "metadata": {"rcsid": "rcs_fuzz"}})
    return event


def hmac_v1(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def carries_genuine_signature(header: str, body: bytes, now: float) -> bool:
    """True when `header` holds, somewhere, a recent timestamp and the v1 HMAC for it.

    A loose oracle, independent of the app's parser: anything the app accepts must pass it.
    """
    for timestamp in set(re.findall(r"[0-9]+", header)):
        if abs(int(timestamp) - now) > TOLERANCE + 5:
            continue
        for secret in (SECRET, OTHER_SECRET):
            if hmac_v1(secret, str(int(timestamp)), body) in header:
                return True
    return False


# --- strategies ---------------------------------------------------------------------------------

# Header values as a WSGI server hands them on: latin-1 text without CR/LF.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f\x85"),
    max_size=200,
)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
signature_item = st.one_of(
    st.builds(lambda t: f"t={t}", st.integers(min_value=-1, max_value=10**13)),
    st.builds(lambda t: f"t={t}", st.just(int(time.time()))),
    st.builds(lambda s: f"v1={s}", hex64),
    st.builds(lambda s: f"v0={s}", hex64),
    st.builds(lambda k, v: f"{k}={v}", header_text, header_text),
    header_text,
)
signature_header = st.one_of(
    header_text,
    st.lists(signature_item, max_size=8).map(",".join),
    st.lists(signature_item, max_size=8).map(" , ".join),
)
content_type = st.one_of(
    st.sampled_from(
        [
            "application/json",
            FORM,
            FORM + "; charset=utf-8",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
        ]
    ),
    header_text,
)
random_headers = st.fixed_dictionaries(
    {},
    optional={
        "Stripe-Signature": signature_header,
        "Content-Type": content_type,
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "x"]),
        "Accept-Charset": header_text,
        "X-Forwarded-For": header_text,
        "User-Agent": header_text,
    },
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["id", "type", "created", "data", "object", "livemode"]), json_values
    ).map(lambda v: json.dumps(v).encode()),
)
random_bodies = st.one_of(st.binary(max_size=4096), json_bodies, header_text.map(str.encode))


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """`original` with one to three random edits: flip, cut, insert, delete, duplicate."""
    body = original
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "delete", "duplicate", "append"]))
        if edit == "flip" and body:
            bit = 1 << draw(st.integers(min_value=0, max_value=7))
            body = body[:at] + bytes([body[at] ^ bit]) + body[at + 1 :]
        elif edit == "cut":
            body = body[:at]
        elif edit == "insert":
            body = body[:at] + draw(st.binary(min_size=1, max_size=16)) + body[at:]
        elif edit == "delete":
            body = body[:at] + body[at + draw(st.integers(min_value=1, max_value=64)) :]
        elif edit == "duplicate":
            body = body[:at] + body[at:] + body[at:]
        else:
            body = body + draw(st.binary(min_size=1, max_size=64))
    return body


# --- Stripe -------------------------------------------------------------------------------------


@FUZZ
@given(body=random_bodies, headers=random_headers)
def test_stripe_random_requests_are_refused_and_queue_nothing(client, redis_url, body, headers):
    r = fresh(redis_url)
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert_sane(response, STRIPE_ALLOWED)
    assert response.status_code == 400
    assert_nothing_queued(r)


STRIPE_BODY = stripe_body(checkout_event())


@FUZZ
@given(body=mutated(STRIPE_BODY))
def test_stripe_mutated_signed_body_is_refused(client, redis_url, body):
    r = fresh(redis_url)
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(STRIPE_BODY))
    assert_sane(response, STRIPE_ALLOWED)
    if body != STRIPE_BODY:
        assert response.status_code == 400
        assert_nothing_queued(r)


@st.composite
def mutated_header(draw: st.DrawFn) -> tuple[bytes, str]:
    """A genuine header for a fresh body, then edited as text (some edits keep it genuine)."""
    body = stripe_body(checkout_event())
    header = stripe_headers(body, draw(st.sampled_from([SECRET, OTHER_SECRET])))["Stripe-Signature"]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(header)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "item", "shuffle", "space"]))
        if edit == "insert":
            header = header[:at] + draw(header_text) + header[at:]
        elif edit == "delete":
            header = header[:at] + header[at + draw(st.integers(1, 20)) :]
        elif edit == "replace" and at < len(header):
            header = header[:at] + draw(st.sampled_from("0123456789abcdef=, t")) + header[at + 1 :]
        elif edit == "item":
            header = header + "," + draw(signature_item)
        elif edit == "shuffle":
            header = ",".join(draw(st.permutations(header.split(","))))
        else:
            header = header[:at] + draw(st.sampled_from([" ", "\t", "  "])) + header[at:]
    return body, header


@FUZZ
@given(case=mutated_header())
def test_stripe_event_is_queued_only_with_a_genuine_signature(client, redis_url, case):
    body, header = case
    r = fresh(redis_url)
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert_sane(response, STRIPE_ALLOWED)
    event(f"status {response.status_code}")
    queued = items(r)
    assert (response.status_code == 200) == bool(queued)
    if response.status_code == 200:
        assert carries_genuine_signature(header, body, time.time()), header
        assert list(queued) == ["rb:item:cs_fuzz"]


OBJECT_KEYS = [
    "id",
    "amount_total",
    "currency",
    "metadata",
    "customer",
    "customer_details",
    "customer_email",
    "client_reference_id",
    "payment_status",
    "mode",
]
EVENT_TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "payment_intent.succeeded",
]


@st.composite
def hostile_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real event with random JSON in the fields the mapping reads."""
    event = checkout_event()
    obj = event["data"]["object"]
    obj.update(draw(st.dictionaries(st.sampled_from(OBJECT_KEYS), json_values, max_size=4)))
    if draw(st.booleans()):
        obj["metadata"] = draw(
            st.dictionaries(
                st.sampled_from(["rcsid", "sessionId", "cid", "clickId", "s1", "x"]), json_values
            )
        )
    event["type"] = draw(st.sampled_from(EVENT_TYPES) | st.text(max_size=30))
    if draw(st.integers(0, 4)) == 0:
        event[draw(st.sampled_from(["id", "type", "created", "data"]))] = draw(json_values)
    return event


def is_event(value: Any) -> bool:
    """An event as the app reads one: string id and type, integer created, object data.object."""
    data = value.get("data")
    return (
        isinstance(value.get("id"), str)
        and value["id"] != ""
        and isinstance(value.get("type"), str)
        and value["type"] != ""
        and type(value.get("created")) is int
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )


@FUZZ
@given(hostile=hostile_events())
def test_stripe_genuine_event_with_hostile_content_is_answered(client, redis_url, hostile):
    r = fresh(redis_url)
    body = json.dumps(hostile).encode()
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert_sane(response, STRIPE_ALLOWED)
    if not is_event(hostile):
        assert response.status_code == 400
        assert response.get_json()["reason"] == "not_an_event"
        assert_nothing_queued(r)
        return
    assert response.status_code == 200
    queued = items(r)
    event(f"queued {len(queued)}")
    assert len(queued) <= 1
    for fields in queued.values():
        payload = json.loads(fields[b"payload"])
        assert payload["externalId"] == hostile["data"]["object"]["id"].strip()
        assert type(payload["amount"]) is int and payload["amount"] >= 0
        assert re.fullmatch(r"[A-Z]{3}", payload["currency"])
        assert "customerEmail" not in payload


# --- PayPal -------------------------------------------------------------------------------------


def looks_form_encoded(body: bytes) -> bool:
    """A loose, independent oracle: printable ASCII `name=value` pairs joined by `&`."""
    segments = [segment for segment in body.split(b"&") if segment]
    return (
        body.isascii()
        and all(0x21 <= byte <= 0x7E for byte in body)
        and bool(segments)
        and all(segment.find(b"=") > 0 for segment in segments)
    )


def check_ipn_answer(r: redis.Redis, response: Any, body: bytes) -> None:
    """200 (empty) exactly when the raw bytes were queued untouched; otherwise nothing queued."""
    assert_sane(response, PAYPAL_ALLOWED)
    event(f"status {response.status_code}")
    queued = items(r)
    if response.status_code != 200:
        assert_nothing_queued(r)
        return
    assert response.data == b""
    assert looks_form_encoded(body), body[:200]
    [(key, fields)] = queued.items()
    assert key.startswith("rb:item:ipn_")
    # Queued unverified, as a raw IPN for a worker to verify; never as a conversion.
    assert fields[b"kind"] == b"ipn"
    assert base64.b64decode(fields[b"raw"]) == body
    assert r.llen("refbridge") == 1


@FUZZ
@given(body=random_bodies, headers=random_headers)
def test_paypal_random_requests(client, redis_url, body, headers):
    r = fresh(redis_url)
    response = client.post("/webhooks/paypal/ipn", data=body, headers=headers)
    check_ipn_answer(r, response, body)


@FUZZ
@given(name=st.sampled_from(IPN_FIXTURES), data=st.data())
def test_paypal_mutated_real_messages(client, redis_url, name, data):
    body = data.draw(mutated(paypal_fixture(name)))
    r = fresh(redis_url)
    response = client.post("/webhooks/paypal/ipn", data=body, content_type=FORM)
    check_ipn_answer(r, response, body)


field_bytes = st.binary(max_size=40)


def encode_pair(name: bytes, value: bytes, plus: bool) -> bytes:
    if plus:
        return f"{quote_plus(name)}={quote_plus(value)}".encode()
    return f"{quote_from_bytes(name, safe='')}={quote_from_bytes(value, safe='')}".encode()


@st.composite
def form_messages(draw: st.DrawFn) -> bytes:
    """Form-encoded messages of random fields, in random charsets, with IPN-ish names."""
    names = st.sampled_from(
        [b"txn_type", b"payment_status", b"txn_id", b"mc_gross", b"mc_currency", b"custom"]
        + [b"payer_email", b"ipn_track_id", b"test_ipn", b"payment_date", b"receiver_email"]
    ) | st.binary(min_size=1, max_size=20)
    pairs = draw(st.lists(st.tuples(names, field_bytes), min_size=1, max_size=12))
    if draw(st.booleans()):
        charset = draw(st.sampled_from(CHARSETS) | st.text(max_size=20))
        pairs.insert(draw(st.integers(0, len(pairs))), (b"charset", charset.encode()))
    plus = draw(st.booleans())
    return b"&".join(encode_pair(name, value, plus) for name, value in pairs)


@FUZZ
@given(body=form_messages(), headers=random_headers)
def test_paypal_any_form_message_is_queued_byte_for_byte(client, redis_url, body, headers):
    r = fresh(redis_url)
    response = client.post("/webhooks/paypal/ipn", data=body, headers=headers)
    check_ipn_answer(r, response, body)
    assert response.status_code == 200


# --- PayPal REST webhooks -----------------------------------------------------------------------

REST_ROUTE = "/webhooks/paypal"
REST_ALLOWED = {200, 400, 413}
TRANSMISSION = (
    "PAYPAL-TRANSMISSION-ID",
    "PAYPAL-TRANSMISSION-TIME",
    "PAYPAL-TRANSMISSION-SIG",
    "PAYPAL-CERT-URL",
    "PAYPAL-AUTH-ALGO",
)
transmission_headers = st.fixed_dictionaries(
    {}, optional={name: header_text | st.just("x" * 2000) for name in TRANSMISSION}
)
genuine_ids = st.builds(lambda n: f"WH-{n:017d}-{n % 9999:08d}", st.integers(0, 10**17))
event_ids = st.one_of(
    genuine_ids,
    genuine_ids,
    genuine_ids,
    st.text(max_size=300),
    st.integers(),
    st.none(),
)


@st.composite
def rest_events(draw: st.DrawFn) -> bytes:
    """JSON objects that look more or less like PayPal events."""
    event: dict[str, Any] = {"id": draw(event_ids)}
    if draw(st.integers(0, 9)):
        event["event_type"] = draw(
            st.sampled_from(["PAYMENT.CAPTURE.COMPLETED", "PAYMENT.SALE.COMPLETED"])
            | st.text(max_size=40)
        )
    if draw(st.integers(0, 9)):
        event["resource"] = draw(st.dictionaries(st.text(max_size=20), json_values, max_size=6))
    return json.dumps(event, ensure_ascii=draw(st.booleans())).encode()


def check_rest_answer(r: redis.Redis, response: Any, body: bytes, headers: dict[str, str]) -> None:
    """200 exactly when the raw event and its five headers were queued untouched, unverified."""
    assert_sane(response, REST_ALLOWED)
    event(f"status {response.status_code}")
    if response.status_code != 200:
        assert_nothing_queued(r)
        return
    assert all(0 < len(headers.get(name, "")) <= 1024 for name in TRANSMISSION)
    [(key, fields)] = items(r).items()
    assert key.startswith("rb:item:ppwh_")
    # Queued for a worker to verify with PayPal; never as a conversion.
    assert fields[b"kind"] == b"paypal_webhook"
    assert base64.b64decode(fields[b"raw"]) == body
    assert json.loads(fields[b"headers"]) == {name: headers[name] for name in TRANSMISSION}
    assert isinstance(json.loads(body)["id"], str)


@FUZZ
@given(
    body=random_bodies | rest_events(),
    headers=transmission_headers,
    extra=random_headers,
)
def test_paypal_rest_random_requests(client, redis_url, body, headers, extra):
    r = fresh(redis_url)
    response = client.post(REST_ROUTE, data=body, headers={**extra, **headers})
    check_rest_answer(r, response, body, headers)


@FUZZ
@given(body=rest_events(), data=st.data())
def test_paypal_rest_events_with_every_header(client, redis_url, body, data):
    headers = {name: data.draw(header_text.filter(bool)) for name in TRANSMISSION}
    if data.draw(st.integers(0, 3)) == 0:
        body = data.draw(mutated(body))
    r = fresh(redis_url)
    response = client.post(REST_ROUTE, data=body, headers=headers, content_type="application/json")
    check_rest_answer(r, response, body, headers)
