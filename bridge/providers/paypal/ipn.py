"""PayPal IPN messages: the intake check, parsing, verification body and mapping to conversions.

Pure functions only: the worker POSTs `verification_body(raw)` to PayPal itself, and maps the
message with `map_ipn(parse_ipn(raw), ...)` once PayPal answered `VERIFIED`. None of the
functions here raises on any input: outcomes are `Conversion | Ignored | Rejected` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple
from urllib.parse import unquote, unquote_to_bytes

from bridge.conversion import (
    Conversion,
    ConversionType,
    Handles,
    Ignored,
    MappingResult,
    Rejected,
    contains_email,
    email_hash,
    handles_of,
    iso_utc,
)
from bridge.money import (
    BadCurrency,
    MalformedAmount,
    currency_exponent,
    plain_decimal,
)
from bridge.providers.paypal.amounts import exact_amount
from bridge.providers.paypal.charsets import DEFAULT_CODEC, ipn_codec
from bridge.providers.paypal.dates import parse_payment_date
from bridge.providers.paypal.refunds import CANCELED_REVERSAL, REFUND_STATUSES, map_ipn_refund

__all__ = [
    "INTAKE_FIELDS",
    "RECURRING_TXN_TYPES",
    "SALE_TXN_TYPES",
    "TrackingIds",
    "is_form_encoded",
    "exact_amount",
    "is_test_ipn",
    "map_ipn",
    "parse_custom",
    "parse_ipn",
    "tracking_ids",
    "parse_payment_date",
    "verification_body",
]

SALE_TXN_TYPES = frozenset({"web_accept", "cart", "express_checkout", "virtual_terminal"})
RECURRING_TXN_TYPES = frozenset({"subscr_payment", "recurring_payment"})
# PayPal's documented payment_status values; anything else is counted as "other" so that a
# reason word never carries arbitrary text into a metric label.
_PAYMENT_STATUSES = frozenset(
    {
        "canceled_reversal",
        "created",
        "denied",
        "expired",
        "failed",
        "in-progress",
        "partially_refunded",
        "pending",
        "processed",
        "refunded",
        "reversed",
        "voided",
    }
)
# What the web process reads of a message nobody has verified yet.
INTAKE_FIELDS = frozenset({"ipn_track_id", "test_ipn"})
_FORM_BYTES = re.compile(rb"[\x21-\x7e]+")  # printable ASCII: no space, control or 8-bit byte
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_VERIFY_PREFIX = b"cmd=_notify-validate&"


def is_form_encoded(raw: bytes) -> bool:
    """True when `raw` is a non-empty x-www-form-urlencoded body of `name=value` pairs."""
    if not _FORM_BYTES.fullmatch(raw) or _BAD_ESCAPE.search(raw):
        return False
    # Empty segments ("a=1&&b=2", a trailing "&") are tolerated, as every form parser does.
    segments = [segment for segment in raw.split(b"&") if segment]
    return bool(segments) and all(segment.find(b"=") > 0 for segment in segments)


def parse_ipn(raw: bytes, only: frozenset[str] | None = None) -> dict[str, str]:
    """The IPN fields decoded with the message's own `charset`; the first of duplicates wins.

    With `only`, just those fields' values are decoded, and the scan stops once all are found.
    """
    pairs = [_split_pair(segment) for segment in raw.split(b"&")]
    encoding = _charset(pairs)
    fields: dict[str, str] = {}
    for name, value in pairs:
        key = _decode(name, encoding)
        if not key or key in fields or (only is not None and key not in only):
            continue
        fields[key] = _decode(_unescape(value), encoding)
        if only is not None and len(fields) == len(only):
            break
    return fields


def verification_body(raw: bytes) -> bytes:
    """The body to POST back to PayPal: the exact bytes received after `cmd=_notify-validate&`."""
    return _VERIFY_PREFIX + raw


def is_test_ipn(fields: Mapping[str, str]) -> bool:
    """True for a sandbox / IPN simulator message (`test_ipn=1`)."""
    return fields.get("test_ipn") == "1"


class TrackingIds(NamedTuple):
    """The attribution ids a PayPal `custom` / `custom_id` names."""

    session_id: str | None = None
    click_id: str | None = None
    affiliate_code: str | None = None


# The pair names of each id, first present wins (docs/mapping.md, Attribution). `sessionId` and
# `clickId` were read before RefCampaign's own names were, and still are.
_SESSION_PAIRS = ("rcsid", "refcampaign_session", "sessionId")
_CLICK_PAIRS = ("cid", "clickId")
_AFFILIATE_PAIRS = ("affiliateCode",)
_ID_PAIRS = (_SESSION_PAIRS, _CLICK_PAIRS, _AFFILIATE_PAIRS)


def parse_custom(value: str) -> TrackingIds:
    """The ids in `custom`: a bare session id, or pairs `rcsid=…&cid=…&affiliateCode=…`."""
    text = value.strip()
    if not text:
        return TrackingIds()
    if "=" not in text:
        return TrackingIds(session_id=text)
    pairs: dict[str, str] = {}
    for segment in text.split("&"):
        name, _, encoded = segment.partition("=")
        # "%" escapes only: "+" stays itself, as tracking ids may be base64 text.
        pairs.setdefault(unquote(name).strip(), unquote(encoded).strip())
    return TrackingIds(
        *(next((pairs[k] for k in keys if pairs.get(k)), None) for keys in _ID_PAIRS)
    )


def tracking_ids(custom: str) -> TrackingIds:
    """`parse_custom`, less any id holding an e-mail address: a merchant may put the buyer's
    address in `custom`, and the bridge never sends nor remembers one."""
    return TrackingIds(*(None if v and contains_email(v) else v for v in parse_custom(custom)))


def map_ipn(
    fields: Mapping[str, str], *, recurring: bool, receiver_emails: Sequence[str]
) -> MappingResult:
    """The conversion a verified IPN stands for, or why none (docs/mapping.md, PayPal IPN)."""
    if _is_foreign_receiver(fields.get("receiver_email", ""), receiver_emails):
        return Rejected("foreign_receiver", "receiver_email is not in PAYPAL_RECEIVER_EMAILS")
    txn_type = fields.get("txn_type", "")
    status = fields.get("payment_status", "")
    if status in REFUND_STATUSES:
        return map_ipn_refund(fields, REFUND_STATUSES[status])
    if status == "Canceled_Reversal":
        return Ignored(CANCELED_REVERSAL, "a chargeback won back cannot undo its clawback")
    if txn_type in SALE_TXN_TYPES or txn_type in RECURRING_TXN_TYPES:
        if txn_type in RECURRING_TXN_TYPES and not recurring:
            return Ignored("recurring_disabled", txn_type)
        if status != "Completed":
            return Ignored(_status_reason(status), status[:40])
        return _map_sale(fields)
    if txn_type == "subscr_signup":
        return _map_signup(fields)
    if not txn_type and status and status != "Completed":
        # Refunds, reversals and their cancellations come without a txn_type.
        return Ignored(_status_reason(status), status[:40])
    if not txn_type:
        return Ignored("missing_txn_type")
    return Ignored("unhandled_txn_type", txn_type[:40])


def _map_sale(fields: Mapping[str, str]) -> MappingResult:
    txn_id = fields.get("txn_id", "").strip()
    if not txn_id:
        return Rejected("missing_txn_id")
    amount = exact_amount(fields.get("mc_gross", ""), fields.get("mc_currency", ""))
    if isinstance(amount, Rejected):
        return amount
    if amount <= 0:
        return Rejected("bad_amount", "a sale's mc_gross must be positive")
    return _conversion(fields, txn_id, "SALE", amount)


def _map_signup(fields: Mapping[str, str]) -> MappingResult:
    subscr_id = fields.get("subscr_id", "").strip()
    if not _is_free_trial(fields.get("mc_amount1")):
        # The sign-up is no sale, but its `custom` names the affiliate its payments (which
        # carry no `custom` of their own) belong to: remembered under its subscr_id.
        signup = _conversion(fields, subscr_id, "TRIAL", 0) if subscr_id else None
        remember = signup if signup is not None and signup.has_tracking_ids else None
        return Ignored("no_free_trial", remember=remember)
    if not subscr_id:
        return Rejected("missing_subscr_id")
    try:
        currency_exponent(fields.get("mc_currency", ""))
    except BadCurrency as error:
        return Rejected("bad_currency", str(error))
    return _conversion(fields, subscr_id, "TRIAL", 0)


def _conversion(
    fields: Mapping[str, str], external_id: str, kind: ConversionType, amount: int
) -> Conversion:
    ids = tracking_ids(fields.get("custom", ""))
    return Conversion(
        external_id=external_id,
        conversion_type=kind,
        amount=amount,
        currency=fields.get("mc_currency", "").upper(),
        session_id=ids.session_id,
        click_id=ids.click_id,
        affiliate_code=ids.affiliate_code,
        customer_email_hash=_email_hash(fields.get("payer_email", "")),
        customer_id=fields.get("payer_id", "").strip() or None,
        converted_at=_converted_at(fields),
        metadata=_metadata(fields),
        handles=_handles(fields),
    )


def _handles(fields: Mapping[str, str]) -> Handles:
    """The subscription (`subscr_id`, or `recurring_payment_id` of a recurring payments profile:
    the same `I-…` id PayPal's REST sales call `billing_agreement_id`), then the payer; and the
    transaction (a REST capture's id is its `txn_id`)."""
    customer = handles_of(
        ("paypal:sub", fields.get("subscr_id")),
        ("paypal:sub", fields.get("recurring_payment_id")),
        ("paypal:payer", fields.get("payer_id")),
    )
    return Handles(customer, handles_of(("paypal:txn", fields.get("txn_id"))))


def _is_free_trial(mc_amount1: str | None) -> bool:
    if mc_amount1 is None:
        return False
    try:
        return plain_decimal(mc_amount1) == 0
    except MalformedAmount:
        return False


def _converted_at(fields: Mapping[str, str]) -> str | None:
    # A subscr_signup carries its time as subscr_date (same format) instead of payment_date.
    value = fields.get("payment_date") or fields.get("subscr_date") or ""
    try:
        return iso_utc(parse_payment_date(value))
    except ValueError:
        return None


def _email_hash(email: str) -> str | None:
    if not email.strip():
        return None
    try:
        return email_hash(email)
    except UnicodeEncodeError:  # a lone surrogate: no email anyone could have typed
        return None


def _metadata(fields: Mapping[str, str]) -> dict[str, str]:
    metadata = {"source": "paypal", "txnType": fields.get("txn_type", "")}
    if fields.get("ipn_track_id"):
        metadata["ipnTrackId"] = fields["ipn_track_id"]
    return metadata


def _is_foreign_receiver(receiver_email: str, receiver_emails: Sequence[str]) -> bool:
    allowed = {email.strip().lower() for email in receiver_emails if email.strip()}
    return bool(allowed) and receiver_email.strip().lower() not in allowed


def _status_reason(status: str) -> str:
    word = status.strip().lower()
    if not word:
        return "payment_status_missing"
    if word not in _PAYMENT_STATUSES:
        return "payment_status_other"
    return "payment_status_" + word.replace("-", "_")


def _split_pair(segment: bytes) -> tuple[bytes, bytes]:
    """The unescaped name and the still escaped value of one `name=value` segment."""
    name, _, value = segment.partition(b"=")
    return _unescape(name), value


def _unescape(data: bytes) -> bytes:
    return unquote_to_bytes(data.replace(b"+", b" "))


def _charset(pairs: Sequence[tuple[bytes, bytes]]) -> str:
    """The codec named by the first `charset` field, else windows-1252 (PayPal's default)."""
    for name, value in pairs:
        if name == b"charset":
            return ipn_codec(_unescape(value).decode("ascii", "replace"))
    return DEFAULT_CODEC


def _decode(data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding, "replace")
    except (UnicodeError, ValueError):  # no codec of the list raises with "replace": be sure
        text = data.decode(DEFAULT_CODEC, "replace")
    if not text.isascii():
        # UTF-7 can spell a lone surrogate, which no JSON body may carry.
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text
