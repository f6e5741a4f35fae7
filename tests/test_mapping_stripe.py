"""map_stripe_event: the Stripe table of docs/mapping.md, on the full events Stripe sends."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.conversion import Conversion, Handles, Ignored
from bridge.providers.stripe.mapping import map_stripe_event
from tests.fixtures import stripe_fixture, stripe_fixture_names

CHECKOUT = "srm__checkout.session.completed.json"  # mode=payment, paid, 3000 usd
SUBSCRIPTION_CHECKOUT = "pay__checkout.session.completed.data.json"  # mode=subscription, 1900 usd
INVOICE = "srm__invoice.paid.json"  # billing_reason=manual, amount_paid 2000
BASIL_INVOICE = "pay__invoice.payment_failed.data.json"  # current API shape, subscription_cycle
PAYMENT_INTENT = "srm__payment_intent.succeeded.json"  # 2000 usd, metadata {}

SESSION_ID = "cs_test_0000000000000000000000000000000000000000000000000000000000"
INVOICE_ID = "in_000000000000000000000000"
INTENT_ID = "pi_000000000000000000000000"
STRIPE_EMAIL_HASH = hashlib.sha256(b"stripe@example.com").hexdigest()


def event(fixture: str, type: str | None = None, **fields: Any) -> dict[str, Any]:
    """A deep copy of a fixture event, its type and `data.object` fields replaced."""
    built = copy.deepcopy(stripe_fixture(fixture))
    if type is not None:
        built["type"] = type
    built["data"]["object"].update(fields)
    return built


def sale(external_id: str, amount: int, conversion_type: str = "SALE") -> tuple[str, str, int]:
    """The (conversionType, externalId, amount) a row expects."""
    return (conversion_type, external_id, amount)


def outcome(result: Conversion | Ignored) -> tuple[str, str, int] | str:
    """A mapping result in the shape the table rows state it."""
    if isinstance(result, Conversion):
        return (result.conversion_type, result.external_id, result.amount)
    return result.reason


# One row per row of that table, in its order.
TABLE_ROWS = [
    pytest.param(
        event(CHECKOUT, payment_status="paid"),
        True,
        sale(SESSION_ID, 3000),
        id="checkout.session.completed paid -> SALE session amount_total",
    ),
    pytest.param(
        event(SUBSCRIPTION_CHECKOUT, payment_status="no_payment_required", amount_total=0),
        True,
        sale("cs_test_a1UejXx8ebIdTzFolicVypUAZpOBVkoQKDbaarXoPlPVtj8p0zujPEEhjT", 0, "TRIAL"),
        id="checkout.session.completed no_payment_required subscription -> TRIAL 0",
    ),
    pytest.param(
        event(CHECKOUT, payment_status="unpaid"),
        True,
        "payment_pending",
        id="checkout.session.completed unpaid (delayed method) -> nothing yet",
    ),
    pytest.param(
        event(CHECKOUT, "checkout.session.async_payment_succeeded"),
        True,
        sale(SESSION_ID, 3000),
        id="checkout.session.async_payment_succeeded -> SALE session amount_total",
    ),
    pytest.param(
        event(INVOICE, billing_reason="subscription_cycle"),
        True,
        sale(INVOICE_ID, 2000),
        id="invoice.paid subscription_cycle, recurring on -> SALE invoice amount_paid",
    ),
    pytest.param(
        event(PAYMENT_INTENT, metadata={"rcsid": "rcs_7fKj2"}),
        True,
        sale(INTENT_ID, 2000),
        id="payment_intent.succeeded with attribution metadata -> SALE intent amount_received",
    ),
    pytest.param(
        event(INVOICE, billing_reason="subscription_create"),
        True,
        "first_invoice",
        id="anything else: invoice.paid subscription_create (checkout counted it) -> nothing",
    ),
    pytest.param(
        event(INVOICE, billing_reason="subscription_cycle"),
        False,
        "recurring_disabled",
        id="anything else: invoice.paid renewal, recurring off -> nothing",
    ),
    pytest.param(
        event(PAYMENT_INTENT),
        True,
        "no_attribution_metadata",
        id="anything else: payment_intent.succeeded without attribution -> nothing",
    ),
    pytest.param(
        stripe_fixture("srm__charge.succeeded.json"),
        True,
        "unhandled_event_type",
        id="anything else: charge.succeeded -> nothing",
    ),
]


@pytest.mark.parametrize(("stripe_event", "recurring", "expected"), TABLE_ROWS)
def test_readme_table(stripe_event: dict[str, Any], recurring: bool, expected: object) -> None:
    assert outcome(map_stripe_event(stripe_event, recurring=recurring)) == expected


FIXTURE_OUTCOMES = {
    "pay__checkout.session.completed.data.json": sale(
        "cs_test_a1UejXx8ebIdTzFolicVypUAZpOBVkoQKDbaarXoPlPVtj8p0zujPEEhjT", 1900
    ),
    "pay__invoice.payment_action_required.data.json": "unhandled_event_type",
    "pay__invoice.payment_failed.data.json": "unhandled_event_type",
    "srm__charge.refunded.json": "refund",
    "stripe_openapi__charge.dispute.closed.json": "chargeback",
    "srm__charge.succeeded.json": "unhandled_event_type",
    "srm__checkout.session.completed.json": sale(SESSION_ID, 3000),
    "srm__checkout.session.completed.setup_mode.json": "setup_mode",
    "srm__customer.subscription.created.json": "unhandled_event_type",
    "srm__invoice.paid.json": "not_a_renewal",
    "srm__invoice.payment_succeeded.json": "unhandled_event_type",
    "srm__payment_intent.succeeded.json": "no_attribution_metadata",
}


def test_every_fixture_file_has_an_expected_outcome() -> None:
    assert sorted(FIXTURE_OUTCOMES) == stripe_fixture_names()


@pytest.mark.parametrize(("name", "expected"), sorted(FIXTURE_OUTCOMES.items()))
def test_fixture_maps_to_its_outcome(name: str, expected: object) -> None:
    result = map_stripe_event(stripe_fixture(name), recurring=True)
    assert outcome(result) == expected


def test_stripe_checkout_fixture_in_full() -> None:
    result = map_stripe_event(stripe_fixture(CHECKOUT), recurring=True)
    assert result == Conversion(
        external_id=SESSION_ID,
        conversion_type="SALE",
        amount=3000,
        currency="USD",
        customer_email_hash=STRIPE_EMAIL_HASH,
        customer_id="cus_00000000000000",
        converted_at="2022-03-26T18:39:19Z",
        metadata={
            "source": "stripe",
            "eventId": "evt_000000000000000000000000",
            "eventType": "checkout.session.completed",
            "livemode": False,
        },
        handles=Handles(("stripe:cus:cus_00000000000000",), ("stripe:pi:" + INTENT_ID,)),
    )
    assert result.attributed


def test_current_api_invoice_shape_renewal_is_a_sale() -> None:
    renewal = event(BASIL_INVOICE, "invoice.paid", status="paid", amount_paid=24900)
    result = map_stripe_event(renewal, recurring=True)
    assert isinstance(result, Conversion)
    assert (result.external_id, result.amount, result.currency) == ("in_1234", 24900, "USD")
    assert result.customer_email_hash == hashlib.sha256(b"customer@example.org").hexdigest()
    assert result.metadata["livemode"] is True


@pytest.mark.parametrize(
    ("currency", "amount", "expected_currency"),
    [("jpy", 5000, "JPY"), ("kwd", 12345, "KWD"), ("eur", 4990, "EUR"), ("Usd", 1, "USD")],
    ids=["zero-decimal JPY", "three-decimal KWD", "two-decimal EUR", "mixed case"],
)
def test_amount_passes_through_in_minor_units(
    currency: str, amount: int, expected_currency: str
) -> None:
    result = map_stripe_event(
        event(CHECKOUT, currency=currency, amount_total=amount), recurring=True
    )
    assert isinstance(result, Conversion)
    assert (result.amount, result.currency) == (amount, expected_currency)


def test_delayed_payment_counts_once_when_it_clears() -> None:
    pending = event(CHECKOUT, payment_status="unpaid")
    cleared = event(CHECKOUT, "checkout.session.async_payment_succeeded", payment_status="paid")
    failed = event(CHECKOUT, "checkout.session.async_payment_failed", payment_status="unpaid")
    assert map_stripe_event(pending, recurring=True) == Ignored(
        "payment_pending", "counted on checkout.session.async_payment_succeeded"
    )
    result = map_stripe_event(cleared, recurring=True)
    assert isinstance(result, Conversion) and result.external_id == SESSION_ID
    assert outcome(map_stripe_event(failed, recurring=True)) == "payment_failed"


@pytest.mark.parametrize(
    ("payment_status", "mode", "expected"),
    [
        ("no_payment_required", "subscription", sale(SESSION_ID, 0, "TRIAL")),
        ("no_payment_required", "payment", "no_payment_required"),
        ("no_payment_required", "setup", "setup_mode"),
        ("paid", "subscription", sale(SESSION_ID, 3000)),
        ("refunded", "payment", "unhandled_payment_status"),
        (None, "payment", "unhandled_payment_status"),
    ],
)
def test_checkout_payment_status_and_mode(
    payment_status: str | None, mode: str, expected: object
) -> None:
    session = event(CHECKOUT, payment_status=payment_status, mode=mode)
    assert outcome(map_stripe_event(session, recurring=True)) == expected


def test_free_trial_is_trial_zero_even_with_a_non_zero_total() -> None:
    trial = event(SUBSCRIPTION_CHECKOUT, payment_status="no_payment_required")
    result = map_stripe_event(trial, recurring=True)
    assert isinstance(result, Conversion)
    assert (result.conversion_type, result.amount, result.currency) == ("TRIAL", 0, "USD")


@pytest.mark.parametrize(
    ("billing_reason", "recurring", "expected"),
    [
        ("subscription_cycle", True, sale(INVOICE_ID, 2000)),
        ("subscription_cycle", False, "recurring_disabled"),
        ("subscription_create", True, "first_invoice"),
        ("subscription_create", False, "first_invoice"),
        ("subscription_update", True, "not_a_renewal"),
        ("manual", True, "not_a_renewal"),
        (None, True, "not_a_renewal"),
    ],
)
def test_renewal_versus_first_invoice(
    billing_reason: str | None, recurring: bool, expected: object
) -> None:
    invoice = event(INVOICE, billing_reason=billing_reason)
    assert outcome(map_stripe_event(invoice, recurring=recurring)) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"rcsid": "rcs_1"}, sale(INTENT_ID, 2000)),
        ({"sessionId": "rcs_1"}, sale(INTENT_ID, 2000)),
        ({"cid": "clk_1"}, sale(INTENT_ID, 2000)),
        ({"clickId": "clk_1"}, sale(INTENT_ID, 2000)),
        ({}, "no_attribution_metadata"),
        ({"rcsid": "", "cid": "  "}, "no_attribution_metadata"),
        ({"order": "42"}, "no_attribution_metadata"),
        (None, "no_attribution_metadata"),
        (["rcsid"], "malformed_object"),
    ],
)
def test_payment_intent_needs_attribution_metadata(metadata: object, expected: object) -> None:
    intent = event(PAYMENT_INTENT, metadata=metadata, receipt_email="buyer@example.com")
    assert outcome(map_stripe_event(intent, recurring=True)) == expected


def test_payment_intent_amount_is_amount_received() -> None:
    intent = event(PAYMENT_INTENT, metadata={"cid": "clk_1"}, amount=5000, amount_received=4000)
    assert outcome(map_stripe_event(intent, recurring=True)) == sale(INTENT_ID, 4000)


@pytest.mark.parametrize(
    ("metadata", "client_reference_id", "session_id", "click_id"),
    [
        ({"rcsid": "a", "sessionId": "b"}, "c", "a", None),
        ({"sessionId": "b"}, "c", "b", None),
        ({}, "c", "c", None),
        ({"rcsid": "", "sessionId": ""}, "c", "c", None),
        ({"cid": "x", "clickId": "y"}, None, None, "x"),
        ({"cid": "", "clickId": "y"}, None, None, "y"),
        ({"rcsid": "a", "cid": "x"}, "c", "a", "x"),
        ({"rcsid": 7, "cid": None}, "", None, None),
    ],
)
def test_attribution_ids_in_precedence_order(
    metadata: dict[str, Any],
    client_reference_id: str | None,
    session_id: str | None,
    click_id: str | None,
) -> None:
    checkout = event(CHECKOUT, metadata=metadata, client_reference_id=client_reference_id)
    result = map_stripe_event(checkout, recurring=True)
    assert isinstance(result, Conversion)
    assert (result.session_id, result.click_id) == (session_id, click_id)


def test_order_without_any_attribution_is_returned_unattributed() -> None:
    anonymous = event(CHECKOUT, customer_details={"email": None}, customer_email="")
    result = map_stripe_event(anonymous, recurring=True)
    assert isinstance(result, Conversion)
    assert not result.attributed
    assert result.session_id is result.click_id is result.customer_email_hash is None


def test_custom_params_s1_to_s5() -> None:
    metadata = {"s1": "a", "s2": "b", "s3": "", "s5": "e", "s6": "f", "s4": 4}
    result = map_stripe_event(event(CHECKOUT, metadata=metadata), recurring=True)
    assert isinstance(result, Conversion)
    assert result.custom_params == {"s1": "a", "s2": "b", "s5": "e"}
    assert result.to_payload()["customParams"] == {"s1": "a", "s2": "b", "s5": "e"}


def sha256_hex(text: str) -> str:
    """The email hash of docs/mapping.md, computed independently of the bridge."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    ("fields", "hashed"),
    [
        ({"customer_details": {"email": "  Stripe@Example.COM \n"}}, "stripe@example.com"),
        ({"customer_details": {"email": "Jöhn.Dœ@Exämple.com"}}, "jöhn.dœ@exämple.com"),
        ({"customer_details": None, "customer_email": "Second@Example.com"}, "second@example.com"),
        (
            {"customer_details": {"email": ""}, "customer_email": None, "receipt_email": "r@x.io"},
            "r@x.io",
        ),
        (
            {
                "customer_details": {"email": "first@x.io"},
                "customer_email": "second@x.io",
                "receipt_email": "third@x.io",
            },
            "first@x.io",
        ),
        ({"customer_email": "second@x.io", "receipt_email": "third@x.io"}, "stripe@example.com"),
        ({"customer_details": {}, "customer_email": "second@x.io"}, "second@x.io"),
    ],
    ids=[
        "trimmed and lower-cased",
        "UTF-8 non-ASCII",
        "customer_email",
        "receipt_email",
        "customer_details.email first",
        "fixture's customer_details.email first",
        "customer_email before receipt_email",
    ],
)
def test_email_is_hashed_and_never_sent_in_plaintext(fields: dict[str, Any], hashed: str) -> None:
    result = map_stripe_event(event(CHECKOUT, **fields), recurring=True)
    assert isinstance(result, Conversion)
    assert result.customer_email_hash == sha256_hex(hashed)
    assert len(result.customer_email_hash) == 64
    sent = json.dumps(result.to_payload(), ensure_ascii=False).lower()
    assert hashed not in sent and "@" not in sent
    assert "customerEmail" not in result.to_payload()


def test_known_email_hash_vector() -> None:
    result = map_stripe_event(stripe_fixture(CHECKOUT), recurring=True)
    assert isinstance(result, Conversion)
    assert result.customer_email_hash == (
        "84a1049bec65fc0cd6d2e08b451e35f732da9e00c759a780eabd4c923dae6310"
    )


def test_metadata_merges_event_facts_with_the_objects_own_metadata() -> None:
    own = {
        "plan": "pro",
        "source": "landing",
        "rcsid": "rcs_1",
        "clickId": "clk_1",
        "s1": "a",
        "contact": "Jane@Example.com",
    }
    checkout = event(CHECKOUT, metadata=own)
    checkout["livemode"] = True
    result = map_stripe_event(checkout, recurring=True)
    assert isinstance(result, Conversion)
    assert result.metadata == {
        "source": "stripe",
        "eventId": "evt_000000000000000000000000",
        "eventType": "checkout.session.completed",
        "livemode": True,
        "plan": "pro",
    }


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("jane@example.com", False),
        ("Jane <jane@example.com>", False),
        ("mailto:jane@example.com", False),
        ("ordered by jane@example.com on Monday", False),
        ("(jane.doe@mail.example.co.uk)", False),
        ("pro plan", True),
        ("@handle", True),
        ("user@localhost", True),
        ("", None),  # empty values are left out anyway
    ],
)
def test_a_value_with_an_email_anywhere_is_left_out(value: str, kept: bool | None) -> None:
    metadata = {"rcsid": "rcs_1", "note": value, "s2": value, "s3": "kept"}
    result = map_stripe_event(event(CHECKOUT, metadata=metadata), recurring=True)
    assert isinstance(result, Conversion)
    payload = result.to_payload()
    assert ("note" in payload["metadata"]) is (kept is not False)
    assert ("s2" in payload["customParams"]) is bool(kept)
    assert payload["customParams"]["s3"] == "kept"
    assert "@example.com" not in json.dumps(payload)


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        ("cus_1", "cus_1"),
        ({"id": "cus_2", "object": "customer", "email": "c@x.io"}, "cus_2"),
        (None, None),
        (42, None),
    ],
    ids=["id", "expanded", "null", "mistyped"],
)
def test_customer_id(customer: object, expected: str | None) -> None:
    result = map_stripe_event(event(CHECKOUT, customer=customer), recurring=True)
    assert isinstance(result, Conversion)
    assert result.customer_id == expected
    assert "c@x.io" not in json.dumps(result.to_payload())


def test_converted_at_is_the_events_created_not_the_objects() -> None:
    checkout = event(CHECKOUT, created=1)
    checkout["created"] = 1_700_000_000
    result = map_stripe_event(checkout, recurring=True)
    assert isinstance(result, Conversion)
    assert result.converted_at == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(
    "fields",
    [
        {"amount_total": None},
        {"amount_total": "3000"},
        {"amount_total": True},
        {"amount_total": 30.0},
        {"amount_total": -1},
        {"currency": None},
        {"currency": "dollars"},
        {"currency": 840},
        {"id": None},
        {"id": ""},
        {"id": "cs_" + "x" * 300},
        {"metadata": "rcsid=1"},
        {"metadata": ["rcsid"]},
    ],
    ids=lambda fields: "-".join(f"{k}={v!r}"[:30] for k, v in fields.items()),
)
def test_malformed_object_is_ignored(fields: dict[str, Any]) -> None:
    assert outcome(map_stripe_event(event(CHECKOUT, **fields), recurring=True)) == (
        "malformed_object"
    )


def test_missing_id_key_is_ignored() -> None:
    checkout = event(CHECKOUT)
    del checkout["data"]["object"]["id"]
    assert outcome(map_stripe_event(checkout, recurring=True)) == "malformed_object"


@pytest.mark.parametrize(
    "changes",
    [
        {"data": None},
        {"data": {"object": "cs_1"}},
        {"data": {}},
        {"created": "1648319959"},
        {"created": 10**20},
        {"created": None},
        {"id": None},
    ],
    ids=["no data", "object a string", "no object", "created a string", "created huge",
         "created null", "no event id"],
)  # fmt: skip
def test_malformed_event_is_ignored(changes: dict[str, Any]) -> None:
    broken = {**stripe_fixture(CHECKOUT), **changes}
    assert outcome(map_stripe_event(broken, recurring=True)) == "malformed_event"


@pytest.mark.parametrize("event_type", [None, 42, ["invoice.paid"], {"a": 1}, ""])
def test_mistyped_event_type_is_unhandled(event_type: object) -> None:
    broken = {**stripe_fixture(CHECKOUT), "type": event_type}
    assert outcome(map_stripe_event(broken, recurring=True)) == "unhandled_event_type"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=25,
)
_object_fields = st.dictionaries(
    st.sampled_from(
        [
            "id", "amount_total", "amount_paid", "amount_received", "currency", "payment_status",
            "mode", "billing_reason", "metadata", "customer", "customer_details",
            "customer_email", "receipt_email", "client_reference_id",
        ]
    ),
    _json,
)  # fmt: skip
_event_like = st.fixed_dictionaries(
    {
        "id": _json | st.just("evt_1"),
        "type": st.sampled_from(
            [
                "checkout.session.completed",
                "checkout.session.async_payment_succeeded",
                "checkout.session.async_payment_failed",
                "invoice.paid",
                "payment_intent.succeeded",
                "charge.succeeded",
            ]
        ),
        "created": _json | st.integers(),
        "livemode": _json,
        "data": st.fixed_dictionaries({"object": _object_fields}) | _json,
    }
)


@given(stripe_event=st.one_of(_event_like, st.dictionaries(st.text(max_size=10), _json)),
       recurring=st.booleans())  # fmt: skip
def test_map_never_raises_on_arbitrary_json(stripe_event: dict[str, Any], recurring: bool) -> None:
    result = map_stripe_event(stripe_event, recurring=recurring)
    assert isinstance(result, Conversion | Ignored)
    if isinstance(result, Conversion):
        assert isinstance(result.amount, int) and result.amount >= 0
        assert len(result.currency) == 3 and result.currency.isupper()
        json.dumps(result.to_payload())
