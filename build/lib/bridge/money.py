"""Decimal amount strings to integer minor units, with Stripe's exponent for each currency."""

from __future__ import annotations

import re
from decimal import Decimal

# Stripe's zero-decimal and three-decimal currencies, so one sale counts the same through
# either provider: https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())

# ASCII digits only: Decimal() would also accept other scripts' digits, exponents, NaN...
_PLAIN_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
# Longer strings are no amount anyone pays; the cap also keeps int() below its digit limit.
_MAX_LENGTH = 40


class BadCurrency(ValueError):
    """A currency code that is not three ASCII letters."""


class InexactAmount(ValueError):
    """An amount that is not an exact number of minor units of its currency."""


class MalformedAmount(InexactAmount):
    """An amount that is not a plain finite decimal number at all (NaN, "1e3", "1,000.00"...)."""


def currency_exponent(currency: str) -> int:
    """Stripe's number of decimal places for `currency` (0, 2 or 3)."""
    code = _currency_code(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def minor_units(amount: str, currency: str) -> int:
    """The decimal string `amount` as an exact integer of `currency`'s minor units."""
    exponent = currency_exponent(currency)
    sign, digits, places = plain_decimal(amount).as_tuple()
    assert isinstance(places, int)  # plain_decimal admits finite numbers only
    value = int("".join(map(str, digits))) * (-1 if sign else 1)
    shift = places + exponent
    scale: int = 10 ** abs(shift)  # int ** int is typed Any: a negative power is a float
    if shift >= 0:
        return value * scale
    whole, rest = divmod(value, scale)
    if rest:
        raise InexactAmount(f"{amount.strip()} has more than {exponent} decimal places")
    return whole


def plain_decimal(amount: str) -> Decimal:
    """`amount` as an exact Decimal; MalformedAmount unless it is a plain finite decimal."""
    text = amount.strip()
    if len(text) > _MAX_LENGTH or not _PLAIN_DECIMAL.fullmatch(text):
        raise MalformedAmount(f"not a plain decimal number: {amount[:_MAX_LENGTH]!r}")
    return Decimal(text)


def _currency_code(currency: str) -> str:
    if len(currency) != 3 or not (currency.isascii() and currency.isalpha()):
        raise BadCurrency(f"not a currency code: {currency[:8]!r}")
    return currency.upper()
