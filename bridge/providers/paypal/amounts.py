"""What both PayPal paths read alike: exact amounts and PayPal ids."""

from __future__ import annotations

import re

from bridge.conversion import Rejected
from bridge.money import BadCurrency, InexactAmount, MalformedAmount, minor_units

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def exact_amount(value: str, currency: str) -> int | Rejected:
    """A decimal amount in minor units, exactly; why not as a Rejected (same rules for IPN and
    REST webhooks, so one sale counts the same through either)."""
    try:
        return minor_units(value, currency)
    except BadCurrency as error:
        return Rejected("bad_currency", str(error))
    except MalformedAmount as error:
        return Rejected("bad_amount", str(error))
    except InexactAmount as error:
        return Rejected("inexact_amount", str(error))


def paypal_id(value: object) -> str | None:
    """A PayPal id (event, resource, payer, order) when `value` is shaped like one, else None."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    return None
