"""Attribution as merchants set it (docs/mapping.md, Attribution): every key of the table, in its
order, in every place the mappings read ids, and the handles a conversion is remembered by."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.conversion import Conversion, Handles, Ignored
from bridge.providers.paypal.ipn import map_ipn, parse_ipn
from bridge.providers.paypal.webhooks import map_webhook_event
from bridge.providers.stripe.mapping import map_stripe_event
from tests.fixtures import paypal_fixture
from tests.test_mapping_paypal import SIGNUP_FREE_TRIAL, edit
from tests.test_mapping_paypal_webhooks import CAPTURE_RAW, SALE_CUSTOM_RAW, edited
from tests.test_mapping_stripe import (
    BASIL_INVOICE,
    CHECKOUT,
    INTENT_ID,
    PAYMENT_INTENT,
    SUBSCRIPTION_CHECKOUT,
    event,
)

# The invoice shape before API 2025-03-31: top-level subscription, payment_intent and charge.
OLD_INVOICE = "pay__invoice.payment_action_required.data.json"


def stripe(built: dict[str, Any]) -> Conversion:
    result = map_stripe_event(built, recurring=True)
    assert isinstance(result, Conversion), result
    return result


def ids(conversion: Conversion) -> tuple[str | None, str | None, str | None]:
    return (conversion.session_id, conversion.click_id, conversion.affiliate_code)


# --- Stripe: the metadata keys, first present wins ---------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        # What RefCampaign's server SDK getStripeMetadata() writes: the main use case.
        ({"refcampaign_session": "rcs_sdk"}, ("rcs_sdk", None, None)),
        ({"rcsid": "rcs_a"}, ("rcs_a", None, None)),
        ({"sessionId": "rcs_b"}, ("rcs_b", None, None)),
        ({"sessionId": "3", "rcsid": "2", "refcampaign_session": "1"}, ("1", None, None)),
        ({"sessionId": "3", "rcsid": "2"}, ("2", None, None)),
        ({"cid": "clk_1"}, (None, "clk_1", None)),
        ({"clickId": "clk_2"}, (None, "clk_2", None)),
        ({"clickId": "clk_2", "cid": "clk_1"}, (None, "clk_1", None)),
        ({"affiliateCode": "jane10"}, (None, None, "jane10")),
        ({"affiliate_code": "jane20"}, (None, None, "jane20")),
        ({"affiliate_code": "jane20", "affiliateCode": "jane10"}, (None, None, "jane10")),
        (
            {"refcampaign_session": "rcs_1", "cid": "clk_1", "affiliateCode": "jane10"},
            ("rcs_1", "clk_1", "jane10"),
        ),
        ({"refcampaign_session": "  ", "rcsid": "rcs_a"}, ("rcs_a", None, None)),
        ({"refcampaign_session": 5}, (None, None, None)),
    ],
)
def test_checkout_metadata_keys(metadata: dict[str, Any], expected: tuple[str, ...]) -> None:
    result = stripe(event(CHECKOUT, metadata=metadata))
    assert ids(result) == expected
    # The keys read for attribution are not sent again inside metadata.
    assert not set(metadata) & set(result.metadata)


def test_a_guide_following_checkout_without_email_is_sent_with_its_session() -> None:
    # The new user's case: getStripeMetadata() only, no email on the session.
    built = event(CHECKOUT, metadata={"refcampaign_session": "rcs_guide"}, customer_details=None)
    result = stripe(built)
    assert result.customer_email_hash is None
    assert result.attributed and result.to_payload()["sessionId"] == "rcs_guide"


def test_client_reference_id_comes_after_the_metadata_keys() -> None:
    only_reference = stripe(event(CHECKOUT, client_reference_id="ref_1"))
    assert only_reference.session_id == "ref_1"
    both = stripe(event(CHECKOUT, client_reference_id="ref_1", metadata={"rcsid": "rcs_a"}))
    assert both.session_id == "rcs_a"


def test_affiliate_code_is_sent_as_refcampaign_names_it() -> None:
    payload = stripe(event(CHECKOUT, metadata={"affiliate_code": "jane10"})).to_payload()
    assert payload["affiliateCode"] == "jane10"
    assert "affiliate_code" not in payload["metadata"]


@pytest.mark.parametrize("key", ["refcampaign_session", "affiliateCode", "affiliate_code", "cid"])
def test_a_payment_intent_with_any_attribution_key_is_a_sale(key: str) -> None:
    result = stripe(event(PAYMENT_INTENT, metadata={key: "id_1"}))
    assert result.external_id == INTENT_ID and result.amount == 2000
    assert "id_1" in ids(result)


# --- Stripe: renewals read their subscription's metadata, in both API shapes -------------------


def old_renewal(**fields: Any) -> dict[str, Any]:
    """The pre-2025-03-31 sample as a paid renewal."""
    built = event(
        OLD_INVOICE,
        "invoice.paid",
        billing_reason="subscription_cycle",
        status="paid",
        amount_paid=1900,
    )
    built["data"]["object"].update(fields)
    return built


def basil_renewal(subscription_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The basil-shaped sample as a paid renewal, its subscription's metadata replaced."""
    built = event(BASIL_INVOICE, "invoice.paid", status="paid", amount_paid=24900)
    if subscription_metadata is not None:
        details = built["data"]["object"]["parent"]["subscription_details"]
        details["metadata"] = subscription_metadata
    return built


def test_an_old_shape_renewal_reads_subscription_details_metadata() -> None:
    result = stripe(old_renewal(subscription_details={"metadata": {"refcampaign_session": "s1"}}))
    assert result.session_id == "s1"
    # The subscription's metadata is read, not forwarded: it is not the invoice's own.
    assert "refcampaign_session" not in result.metadata


def test_a_basil_renewal_reads_parent_subscription_details_metadata() -> None:
    result = stripe(basil_renewal({"refcampaign_session": "s2", "affiliateCode": "a2"}))
    assert ids(result) == ("s2", None, "a2")


def test_the_basil_sample_as_it_is_names_no_affiliate() -> None:
    # Its subscription's metadata is {"license_id": "0"}: no attribution key.
    result = stripe(basil_renewal())
    assert ids(result) == (None, None, None)


def test_the_invoice_own_metadata_comes_before_its_subscription() -> None:
    result = stripe(
        old_renewal(
            metadata={"cid": "own_click"},
            subscription_details={"metadata": {"cid": "sub_click", "rcsid": "sub_session"}},
        )
    )
    assert ids(result) == ("sub_session", "own_click", None)


@pytest.mark.parametrize("details", [None, "x", {"metadata": None}, {"metadata": ["rcsid"]}])
def test_odd_subscription_details_are_no_metadata(details: object) -> None:
    assert ids(stripe(old_renewal(subscription_details=details))) == (None, None, None)


# --- Stripe: the handles a conversion is remembered by -----------------------------------------


def test_an_old_shape_renewal_names_its_subscription_customer_and_payment() -> None:
    result = stripe(old_renewal())
    assert result.handles == Handles(
        ("stripe:sub:sub_IYB5OQklQXomEl", "stripe:cus:cus_IYB5pHKJkn27TZ"),
        (
            "stripe:in:in_1Hx4jjKXBGcbgpbZVwfvzBSO",
            "stripe:pi:pi_1Hx4jjKXBGcbgpbZu0gWEB4Z",
            "stripe:ch:ch_1Hx4jkKXBGcbgpbZgDOkhWcr",
        ),
    )


def test_a_basil_renewal_names_its_subscription_from_parent() -> None:
    result = stripe(basil_renewal())
    assert result.handles.customer == ("stripe:sub:sub_1234", "stripe:cus:cus_1234")
    assert result.handles.payment == ("stripe:in:in_1234",)


def test_a_basil_invoice_names_the_payments_it_lists() -> None:
    built = basil_renewal()
    built["data"]["object"]["payments"] = {
        "object": "list",
        "data": [{"payment": {"type": "payment_intent", "payment_intent": "pi_9"}}, "odd"],
    }
    assert stripe(built).handles.payment == ("stripe:in:in_1234", "stripe:pi:pi_9")


def test_a_subscription_checkout_names_its_subscription_and_first_invoice() -> None:
    result = stripe(event(SUBSCRIPTION_CHECKOUT))
    session = event(SUBSCRIPTION_CHECKOUT)["data"]["object"]
    assert result.handles.customer == (
        f"stripe:sub:{session['subscription']}",
        f"stripe:cus:{session['customer']}",
    )
    # The sample predates the session's `invoice` field; current API versions carry it.
    assert result.handles.payment == ()
    with_invoice = stripe(event(SUBSCRIPTION_CHECKOUT, invoice="in_first"))
    assert with_invoice.handles.payment == ("stripe:in:in_first",)


def test_expanded_objects_and_overlong_ids_in_handles() -> None:
    built = event(CHECKOUT, customer={"id": "cus_exp"}, payment_intent="p" * 300)
    assert stripe(built).handles == Handles(("stripe:cus:cus_exp",), ())


# --- PayPal: custom pairs and handles -----------------------------------------------------------

SUBSCR_PAYMENT = paypal_fixture("boxbilling__subscr_payment_completed.txt")


def ipn(raw: bytes) -> Conversion | Ignored:
    result = map_ipn(parse_ipn(raw), recurring=True, receiver_emails=())
    assert isinstance(result, Conversion | Ignored), result
    return result


def test_an_ipn_custom_with_refcampaign_names() -> None:
    raw = edit(SUBSCR_PAYMENT, custom="refcampaign_session%3Drcs_1%26affiliateCode%3Djane10")
    result = ipn(raw)
    assert isinstance(result, Conversion)
    assert ids(result) == ("rcs_1", None, "jane10")
    assert result.to_payload()["affiliateCode"] == "jane10"


def test_a_subscription_payment_names_its_subscription_payer_and_transaction() -> None:
    result = ipn(SUBSCR_PAYMENT)
    assert isinstance(result, Conversion)
    assert result.handles == Handles(
        ("paypal:sub:S-9X268688JL8514304", "paypal:payer:9W3MDRHPS5RTY"),
        ("paypal:txn:6SR99524AP993094V",),
    )


def test_a_recurring_payment_profile_is_its_subscription() -> None:
    raw = edit(
        SUBSCR_PAYMENT, txn_type="recurring_payment", subscr_id=None, recurring_payment_id="I-R1"
    )
    result = ipn(raw)
    assert isinstance(result, Conversion)
    assert result.handles.customer[0] == "paypal:sub:I-R1"


def test_a_paid_signup_is_no_sale_but_leaves_its_custom_to_remember() -> None:
    paid = edit(SIGNUP_FREE_TRIAL, mc_amount1="9.99")
    result = ipn(paid)
    assert isinstance(result, Ignored) and result.reason == "no_free_trial"
    assert result.remember is not None
    assert ids(result.remember) == ("sess_abc", "clk_123", None)
    assert result.remember.handles.customer == (
        "paypal:sub:I-FREETRIAL42",
        "paypal:payer:TRIALPAYER01",
    )


def test_a_signup_without_custom_leaves_nothing() -> None:
    result = ipn(edit(SIGNUP_FREE_TRIAL, mc_amount1="9.99", custom=None))
    assert isinstance(result, Ignored) and result.remember is None


def test_a_rest_sale_names_its_billing_agreement_and_takes_affiliate_codes() -> None:
    def change(built: dict[str, Any]) -> None:
        built["resource"]["billing_agreement_id"] = "I-BA1"
        built["resource"]["custom"] = "affiliateCode=jane10"

    result = map_webhook_event(edited(SALE_CUSTOM_RAW, change), recurring=True)
    assert isinstance(result, Conversion)
    assert ids(result) == (None, None, "jane10")
    assert result.handles.customer == ("paypal:sub:I-BA1",)
    assert result.handles.payment == (f"paypal:txn:{result.external_id}",)


def test_a_rest_capture_is_its_ipn_twin_transaction() -> None:
    result = map_webhook_event(copy.deepcopy(edited(CAPTURE_RAW, lambda e: None)), recurring=True)
    assert isinstance(result, Conversion)
    assert result.handles.payment == (f"paypal:txn:{result.external_id}",)


@pytest.mark.parametrize("listed", [5, True, "pi_1", {"payment": {}}, None, [[]], [{"payment": 3}]])
def test_a_payments_list_of_any_shape_never_crashes_the_mapping(listed: object) -> None:
    built = basil_renewal()
    built["data"]["object"]["payments"] = {"data": listed}
    assert stripe(built).handles.payment == ("stripe:in:in_1234",)


def test_a_long_payments_list_names_a_few() -> None:
    built = basil_renewal()
    entries = [{"payment": {"payment_intent": f"pi_{n}"}} for n in range(1000)]
    built["data"]["object"]["payments"] = {"data": entries}
    assert len(stripe(built).handles.payment) <= 5


@pytest.mark.parametrize(
    "custom", ["jane%40example.com", "rcsid%3Djane%2540example.com%26cid%3Dclk_1"]
)
def test_an_ipn_custom_holding_an_email_is_never_an_id(custom: str) -> None:
    result = ipn(edit(SUBSCR_PAYMENT, custom=custom))
    assert isinstance(result, Conversion)
    assert "@" not in str(ids(result))


def test_a_merchants_own_attributed_from_is_not_passed_on() -> None:
    result = stripe(event(CHECKOUT, metadata={"rcsid": "s", "attributedFrom": "cs_fake"}))
    assert "attributedFrom" not in result.to_payload()["metadata"]
