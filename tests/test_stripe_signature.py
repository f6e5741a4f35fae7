"""verify_stripe_event: Stripe-Signature checks with the SDK, then the body as a JSON event."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from bridge.providers.stripe.signature import StripeEventError, verify_stripe_event
from tests.fixtures import stripe_fixture

SECRET = "whsec_test_current_0123456789abcdef"
OLD_SECRET = "whsec_test_previous_fedcba9876543210"
NOW = 1_700_000_000
TOLERANCE = 300
EVENT = stripe_fixture("srm__checkout.session.completed.json")
BODY = json.dumps(EVENT, indent=2).encode("utf-8")


def sign(body: bytes, secret: str = SECRET, timestamp: int = NOW) -> str:
    """The header Stripe would send for `body` (the SDK's own signing algorithm)."""
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8"), secret, timestamp=timestamp
    )
    return str(header)


def v1_of(header: str) -> str:
    """The v1 signature in a header made by `sign`."""
    return header.split("v1=")[1]


def verify(
    body: bytes = BODY,
    header: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    now: float = NOW,
) -> dict[str, Any]:
    """verify_stripe_event with the test defaults; the header defaults to a valid one."""
    return verify_stripe_event(
        body, sign(body) if header is None else header, secrets, TOLERANCE, now=now
    )


def reason_of(**kwargs: Any) -> str:
    """The reason of the StripeEventError that `verify(**kwargs)` raises."""
    with pytest.raises(StripeEventError) as caught:
        verify(**kwargs)
    return caught.value.reason


def test_signed_event_is_returned_as_plain_json() -> None:
    event = verify()
    assert event == EVENT
    assert type(event) is dict
    assert event["data"]["object"].get("payment_status") == "paid"


def test_default_now_is_the_clock() -> None:
    header = sign(BODY, timestamp=int(time.time()))
    assert verify_stripe_event(BODY, header, [SECRET], TOLERANCE)["id"] == EVENT["id"]


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param((OLD_SECRET, SECRET), id="second secret matches (secret rolling)"),
        pytest.param((SECRET, OLD_SECRET), id="first secret matches"),
        pytest.param(("", "   ", SECRET), id="blank secrets are skipped"),
        pytest.param((f"  {SECRET}\n",), id="whitespace around a secret is ignored"),
    ],
)
def test_any_configured_secret_verifies(secrets: tuple[str, ...]) -> None:
    assert verify(secrets=secrets)["id"] == EVENT["id"]


def test_comma_separated_string_of_secrets_is_split() -> None:
    assert verify_stripe_event(BODY, sign(BODY), f"{OLD_SECRET},{SECRET}", TOLERANCE, now=NOW)


@pytest.mark.parametrize("secrets", [(), ("",), (" ", "\t")], ids=["none", "empty", "blank"])
def test_no_usable_secret_is_a_configuration_error(secrets: tuple[str, ...]) -> None:
    assert reason_of(secrets=secrets) == "no_secret_configured"


@pytest.mark.parametrize("header", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_missing_header_is_refused(header: str | None) -> None:
    with pytest.raises(StripeEventError) as caught:
        verify_stripe_event(BODY, header, [SECRET], TOLERANCE, now=NOW)
    assert caught.value.reason == "missing_signature"


def test_several_v1_entries_pass_when_one_matches() -> None:
    good = v1_of(sign(BODY))
    other = v1_of(sign(BODY, secret=OLD_SECRET))
    assert verify(header=f"t={NOW},v1={other},v1={good},v0={'0' * 64}")


def test_whitespace_around_items_is_tolerated() -> None:
    assert verify(header=f" t = {NOW} ,  v1={v1_of(sign(BODY))} ")


def test_unknown_schemes_are_skipped() -> None:
    assert verify(header=f"t={NOW},v0=abc,scheme=1,v1={v1_of(sign(BODY))},junk")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(sign(BODY, secret=OLD_SECRET), id="signed with another secret"),
        pytest.param(f"t={NOW + 1},v1={v1_of(sign(BODY))}", id="timestamp changed"),
        pytest.param(f"t={NOW},v0={v1_of(sign(BODY))}", id="only an unknown scheme"),
        pytest.param(f"t={NOW}", id="no signature"),
        pytest.param(f"v1={v1_of(sign(BODY))}", id="no timestamp"),
        pytest.param(f"t=abc,v1={v1_of(sign(BODY))}", id="t=abc"),
        pytest.param(f"t=,v1={v1_of(sign(BODY))}", id="empty t"),
        pytest.param(f"t=-{NOW},v1={v1_of(sign(BODY))}", id="negative t"),
        pytest.param(f"t=\u0661\u0662,v1={v1_of(sign(BODY))}", id="non-ASCII digits"),
        pytest.param(f"t={'9' * 5000},v1={v1_of(sign(BODY))}", id="t beyond int parsing"),
        pytest.param(f"t={NOW},v1=\u00e9\u00e9", id="non-ASCII signature"),
        pytest.param(f"t={NOW},v1={v1_of(sign(BODY)).upper()}", id="upper-case hex"),
        pytest.param("garbage", id="garbage"),
        pytest.param(",,,===,", id="separators only"),
        pytest.param(f"t={NOW},v1={v1_of(sign(BODY))}," + "v1=0," * 5000, id="huge header"),
    ],
)
def test_bad_signature_is_refused(header: str) -> None:
    assert reason_of(header=header) == "bad_signature"


def test_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"3000", b"3001")
    assert reason_of(body=tampered, header=sign(BODY)) == "bad_signature"


@pytest.mark.parametrize(
    ("signed_at", "expected"),
    [
        pytest.param(NOW - TOLERANCE - 1, "stale_timestamp", id="older than tolerance"),
        pytest.param(NOW + TOLERANCE + 1, "future_timestamp", id="further ahead than tolerance"),
    ],
)
def test_timestamp_outside_tolerance_is_refused(signed_at: int, expected: str) -> None:
    assert reason_of(header=sign(BODY, timestamp=signed_at)) == expected


@pytest.mark.parametrize("signed_at", [NOW - TOLERANCE, NOW, NOW + TOLERANCE])
def test_timestamp_within_tolerance_passes(signed_at: int) -> None:
    assert verify(header=sign(BODY, timestamp=signed_at))


def test_signature_is_checked_before_age() -> None:
    stale_forgery = sign(BODY, secret=OLD_SECRET, timestamp=NOW - 10 * TOLERANCE)
    assert reason_of(header=stale_forgery) == "bad_signature"


def test_body_that_is_not_utf8_is_refused_even_when_signed() -> None:
    body = b'{"id": "evt_\xff"}'
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert reason_of(body=body, header=f"t={NOW},v1={mac}") == "not_utf8"


@pytest.mark.parametrize(
    "text",
    ["not json", "", "{", "[" * 100_000, "1" * 5000, "\ufeff{}"],
    ids=["text", "empty", "truncated", "deeply nested", "huge number", "BOM"],
)
def test_signed_body_that_is_not_json_is_refused(text: str) -> None:
    body = text.encode("utf-8")
    assert reason_of(body=body, header=sign(body)) == "not_json"


def _event_with(**changes: Any) -> dict[str, Any]:
    """The fixture event with top-level keys replaced (a value of ... deletes the key)."""
    event = {**EVENT, **changes}
    return {key: value for key, value in event.items() if value is not ...}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param([EVENT], id="array"),
        pytest.param("evt", id="string"),
        pytest.param(None, id="null"),
        pytest.param(_event_with(id=...), id="no id"),
        pytest.param(_event_with(id=42), id="id not a string"),
        pytest.param(_event_with(type=...), id="no type"),
        pytest.param(_event_with(type=""), id="empty type"),
        pytest.param(_event_with(created="1648319959"), id="created a string"),
        pytest.param(_event_with(created=True), id="created a bool"),
        pytest.param(_event_with(created=1.5), id="created a float"),
        pytest.param(_event_with(data=...), id="no data"),
        pytest.param(_event_with(data={"object": None}), id="data.object null"),
        pytest.param(_event_with(data={"object": []}), id="data.object an array"),
    ],
)
def test_signed_json_that_is_not_an_event_is_refused(document: object) -> None:
    body = json.dumps(document).encode("utf-8")
    assert reason_of(body=body, header=sign(body)) == "not_an_event"


def test_error_messages_never_carry_the_secret_or_the_payload() -> None:
    secret_body = json.dumps({"id": "evt_1", "email": "jane@example.com"}).encode()
    cases: list[dict[str, Any]] = [
        dict(body=secret_body, header=sign(secret_body, secret=OLD_SECRET)),
        dict(body=secret_body, header=sign(secret_body)),
        dict(header=sign(BODY, timestamp=NOW - 10_000)),
        dict(body=b"jane@example.com", header=sign(b"jane@example.com")),
    ]
    for case in cases:
        with pytest.raises(StripeEventError) as caught:
            verify(secrets=(OLD_SECRET.replace("previous", "other"), SECRET), **case)
        shown = f"{caught.value} {caught.value!r}"
        assert SECRET not in shown and "whsec" not in shown
        assert "jane@example.com" not in shown
        assert caught.value.reason.isidentifier() and caught.value.reason.islower()


def test_error_is_one_named_exception_with_a_reason() -> None:
    with pytest.raises(StripeEventError) as caught:
        verify(header="garbage")
    assert isinstance(caught.value, Exception)
    assert caught.value.reason == "bad_signature"
    assert str(caught.value)


_header_items = st.one_of(
    st.text(max_size=40),
    st.builds(lambda v: f"t={v}", st.one_of(st.integers(), st.text(max_size=12))),
    st.builds(lambda v: f"v1={v}", st.one_of(st.text(max_size=70), st.just("0" * 64))),
)
_headers = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.lists(_header_items, max_size=8).map(",".join),
)


@given(body=st.binary(max_size=400), header=_headers)
def test_arbitrary_bytes_and_headers_raise_only_stripe_event_error(
    body: bytes, header: str | None
) -> None:
    try:
        verify_stripe_event(body, header, [SECRET, " "], TOLERANCE, now=NOW)
    except StripeEventError as error:
        assert error.reason in {
            "missing_signature",
            "bad_signature",
            "not_utf8",
        }


@given(
    document=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ),
    signed_at=st.integers(min_value=NOW - 2 * TOLERANCE, max_value=NOW + 2 * TOLERANCE),
)
def test_arbitrary_signed_json_returns_an_event_or_raises_stripe_event_error(
    document: object, signed_at: int
) -> None:
    body = json.dumps(document).encode("utf-8")
    try:
        event = verify(body=body, header=sign(body, timestamp=signed_at))
    except StripeEventError as error:
        assert error.reason in {"stale_timestamp", "future_timestamp", "not_json", "not_an_event"}
    else:
        assert isinstance(event["data"]["object"], dict)
